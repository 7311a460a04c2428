package main

import (
	"archive/tar"
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

func TestImageDeterministic(t *testing.T) {
	certs := []byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
	a, err := Image(certs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Image(bytes.Clone(certs))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Image(append(bytes.Clone(certs), '\n'))
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	dc, _ := c.Digest()
	if da != db {
		t.Errorf("same CA bundle: digests %s and %s, want equal", da, db)
	}
	if da == dc {
		t.Errorf("other CA bundle: digest %s, want a different one", dc)
	}

	cf, err := a.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532" || cf.OS != "linux" || cf.Architecture != "amd64" || cf.RootFS.Type != "layers" {
		t.Errorf("config: user %q, platform %s/%s, rootfs %q; want 65532, linux/amd64, layers",
			cf.Config.User, cf.OS, cf.Architecture, cf.RootFS.Type)
	}
}

func TestLayerSortedFixedTimes(t *testing.T) {
	raw, err := Layer([]byte("certs"))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, epoch)
		}
		if n := len(names); n > 0 && names[n-1] >= h.Name {
			t.Errorf("%s after %s: want sorted entries", h.Name, names[n-1])
		}
		names = append(names, h.Name)
	}
	want := "etc/ etc/group etc/passwd etc/ssl/ etc/ssl/certs/ etc/ssl/certs/ca-certificates.crt home/ home/nonroot/ tmp/"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("entries %q, want %q", got, want)
	}
}

func TestAppendOnce(t *testing.T) {
	img, err := Image([]byte("certs"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "img")
	for range 2 {
		if _, err := Append(dir, img); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if len(m.Manifests) != 1 || m.Manifests[0].Digest != want {
		t.Errorf("index after two appends: %+v, want the one image %s", m.Manifests, want)
	}
}
