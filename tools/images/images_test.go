package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// image is one line of digests.txt.
type image struct {
	ref string // reference@manifest digest
	id  string // config digest ("-" for the base)
}

// binaries maps each image to the file ko puts under /ko-app (the last element of the import path).
var binaries = map[string]string{
	"config":      "config",
	"callback":    "callback",
	"executor":    "executor",
	"nats-server": "v2",
	"store":       "store",
	"receiver":    "receiver",
}

// TestImages runs make images twice, each time into a new output directory and a new KOCACHE
// (the Go build cache is shared), and wants the same digests; then it reads every tarball.
func TestImages(t *testing.T) {
	if os.Getenv("IMAGES") == "" {
		t.Skip("set IMAGES=1 to build the images twice (about 20 s with a warm Go build cache)")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	first := build(t, root, filepath.Join(tmp, "first"))
	second := build(t, root, filepath.Join(tmp, "second"))

	for _, name := range []string{"base", "config", "callback", "executor", "console", "nats-server", "store", "receiver"} {
		got, ok := second[name]
		want := first[name]
		if !ok || want.ref == "" {
			t.Errorf("%s: missing from digests.txt: first %v, second %v", name, first, second)
			continue
		}
		if got != want {
			t.Errorf("%s: rebuild gave %+v, want %+v", name, got, want)
		}
		t.Logf("%-11s %s %s", name, want.ref, want.id)
	}

	for name, bin := range binaries {
		t.Run(name, func(t *testing.T) {
			checkTarball(t, filepath.Join(tmp, "first", "images", name+".tar"), bin, first[name])
		})
	}
}

// build runs make images with its outputs under dir and returns digests.txt.
func build(t *testing.T, root, dir string) map[string]image {
	t.Helper()
	out := filepath.Join(dir, "images")
	cmd := exec.Command("make", "-C", root, "images",
		"IMAGES_DIR="+out, "IMAGES_KOCACHE="+filepath.Join(dir, "ko"))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("make images: %v\n%s", err, log.String())
	}
	f, err := os.Open(filepath.Join(out, "digests.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	digests := map[string]image{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			t.Fatalf("digests.txt: line %q: want name, reference and id", sc.Text())
		}
		digests[fields[0]] = image{ref: fields[1], id: fields[2]}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return digests
}

// checkTarball reads the image in path and checks its config against want and the files the base
// and ko put in it.
func checkTarball(t *testing.T, path, bin string, want image) {
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != want.id {
		t.Errorf("image id %s, digests.txt says %s", id, want.id)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if cf.Config.User != "65532" {
		t.Errorf("user %q, want 65532", cf.Config.User)
	}
	if entry := []string{"/ko-app/" + bin}; !slices.Equal(cf.Config.Entrypoint, entry) {
		t.Errorf("entrypoint %q, want %q", cf.Config.Entrypoint, entry)
	}
	if !slices.Contains(cf.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") {
		t.Errorf("env %q, want SSL_CERT_FILE", cf.Config.Env)
	}

	files := map[string]*tar.Header{}
	var passwd, binary []byte
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "/"), "/")
		files[name] = h
		switch name {
		case "etc/passwd":
			passwd, err = io.ReadAll(tr)
		case "ko-app/" + bin:
			binary, err = io.ReadAll(tr)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Contains(passwd, []byte("\nnonroot:x:65532:65532:")) {
		t.Errorf("/etc/passwd has no nonroot 65532:\n%s", passwd)
	}
	for name, mode := range map[string]int64{
		"etc/ssl/certs/ca-certificates.crt": 0o644,
		"tmp":                               0o1777,
		"home/nonroot":                      0o700,
		"ko-app/" + bin:                     0o555,
	} {
		h := files[name]
		if h == nil {
			t.Errorf("/%s: missing", name)
			continue
		}
		if h.Mode&0o7777 != mode {
			t.Errorf("/%s: mode %o, want %o", name, h.Mode&0o7777, mode)
		}
	}
	if h := files["home/nonroot"]; h != nil && (h.Uid != 65532 || h.Gid != 65532) {
		t.Errorf("/home/nonroot: owner %d:%d, want 65532:65532", h.Uid, h.Gid)
	}
	if binary != nil {
		exe, err := elf.NewFile(bytes.NewReader(binary))
		if err != nil {
			t.Fatalf("/ko-app/%s: %v", bin, err)
		}
		for _, p := range exe.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("/ko-app/%s: dynamically linked, want static", bin)
			}
		}
	}
}
