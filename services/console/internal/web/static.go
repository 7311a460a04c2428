package web

import (
	"bytes"
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"time"

	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

//go:embed assets
var assets embed.FS

// asset is one embedded file, read once at start.
type asset struct {
	body        []byte
	contentType string
}

// loadAssets reads every embedded file, keyed by its URL path ("/" is index.html).
func loadAssets() (map[string]asset, error) {
	files := map[string]asset{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		ct := mime.TypeByExtension(path.Ext(p))
		if path.Ext(p) == ".js" {
			ct = "text/javascript; charset=utf-8"
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		urlPath := p[len("assets"):]
		files[urlPath] = asset{body: b, contentType: ct}
		if path.Base(urlPath) == "index.html" {
			files[path.Dir(urlPath)] = asset{body: b, contentType: ct}
		}
		return nil
	})
	return files, err
}

// staticHandler serves the embedded files; any other path is 404.
func staticHandler(files map[string]asset) http.HandlerFunc {
	started := time.Now()
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := files[r.URL.Path]
		if !ok {
			api.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", a.contentType)
		// Revalidated on every load: a new build is picked up at once, an unchanged one costs a 304.
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", started, bytes.NewReader(a.body))
	}
}
