package chaos

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/policyhooks/policyhooks/shared/devstack"
	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
)

// RunRole runs the test binary, re-executed by the suite, as the NATS node ("nats": nats-server
// with JetStream on dir, listening on 127.0.0.1:port) or as the store ("store": FerretDB with its
// files in dir, listening on addr), until SIGTERM or SIGINT; SIGKILL crashes it. It returns the exit
// code.
func RunRole(role, dir string, port int, addr string) int {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	switch role {
	case "nats":
		n, err := devstack.StartNATS(dir, "127.0.0.1", port)
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos nats node:", err)
			return 1
		}
		fmt.Println("chaos nats node: ready on", n.URL(), "store", dir)
		s := <-stop
		fmt.Println("chaos nats node: got", s, "- shutting down")
		n.Shutdown()
		return 0
	case "store":
		st, err := ferret.Start(dir, addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos store:", err)
			return 1
		}
		fmt.Println("chaos store: ready on", st.URI())
		s := <-stop
		fmt.Println("chaos store: got", s, "- stopping")
		st.Stop()
		return 0
	default:
		fmt.Fprintf(os.Stderr, "chaos: unknown role %q\n", role)
		return 2
	}
}
