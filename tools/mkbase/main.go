// Command mkbase writes the base image of the service images into an OCI layout and prints its
// digest, so that ko can build offline: with KOCACHE set, ko serves a base referenced by digest from
// the layout at $KOCACHE/img instead of pulling it from a registry.
//
// The image has one layer: /etc/passwd and /etc/group (root, and nonroot 65532), the host's CA
// bundle at /etc/ssl/certs/ca-certificates.crt, a world-writable /tmp (mode 1777) and
// /home/nonroot. Its config is linux/amd64, User 65532 and SSL_CERT_FILE. Every time stamp is
// fixed and the entries are sorted, so the digest depends only on the CA bundle.
//
// Usage:
//
//	mkbase -layout "$KOCACHE/img" [-ca /etc/ssl/certs/ca-certificates.crt]
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// CertFile is where the image keeps the CA bundle (the path distroless and Debian use).
const CertFile = "/etc/ssl/certs/ca-certificates.crt"

// NonRoot is the uid and gid of the image's default user.
const NonRoot = 65532

const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\n" +
		"nonroot:x:65532:\n"
)

// epoch is the modification time of every entry and the creation time of the image.
var epoch = time.Unix(0, 0).UTC()

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkbase:", err)
		os.Exit(1)
	}
}

func run(_ context.Context, args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("mkbase", flag.ContinueOnError)
	dir := fl.String("layout", "", "the OCI layout to append the image to (ko reads $KOCACHE/img); created if missing")
	ca := fl.String("ca", CertFile, "the CA bundle to put into the image")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fl.NArg() != 0 {
		return errors.New("usage: mkbase -layout DIR [-ca FILE]")
	}
	certs, err := os.ReadFile(*ca)
	if err != nil {
		return fmt.Errorf("read CA bundle: %w", err)
	}
	img, err := Image(certs)
	if err != nil {
		return err
	}
	digest, err := Append(*dir, img)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, digest)
	return err
}

// file is one entry of the layer.
type file struct {
	name     string // without a leading slash; directories end in a slash
	mode     int64
	uid, gid int
	body     []byte
}

// Layer returns the uncompressed tar of the base layer with the given CA bundle.
func Layer(certs []byte) ([]byte, error) {
	files := []file{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: certs},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: NonRoot, gid: NonRoot},
		{name: "tmp/", mode: 0o1777},
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name:    f.name,
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.gid,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		if f.name[len(f.name)-1] == '/' {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

// Image returns the base image (OCI media types) with the given CA bundle.
func Image(certs []byte) (v1.Image, error) {
	raw, err := Layer(certs)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}

	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	base, err = mutate.ConfigFile(base, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			User:       fmt.Sprint(NonRoot),
			WorkingDir: "/home/nonroot",
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"SSL_CERT_FILE=" + CertFile,
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "policyhooks tools/mkbase",
			Comment:   "passwd, group, CA bundle, /tmp, /home/nonroot",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image: append layer: %w", err)
	}
	return img, nil
}

// Append adds img to the OCI layout at dir (created if missing) unless the layout already holds
// it, and returns the image's digest.
func Append(dir string, img v1.Image) (v1.Hash, error) {
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layout: digest: %w", err)
	}
	p, err := layout.FromPath(dir)
	if errors.Is(err, fs.ErrNotExist) {
		p, err = layout.Write(dir, empty.Index)
	}
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: %w", dir, err)
	}
	found, err := partial.FindManifests(idx, match.Digests(digest))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: %w", dir, err)
	}
	if len(found) != 0 {
		return digest, nil
	}
	if err := p.AppendImage(img); err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: append: %w", dir, err)
	}
	return digest, nil
}
