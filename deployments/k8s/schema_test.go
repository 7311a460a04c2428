package k8s

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// kubernetesModule is the module version whose api/openapi-spec/swagger.json, the OpenAPI v2
// document of the Kubernetes API at that release, the schemas are generated from. The module
// proxy serves it like any Go module, so no schema registry is needed.
const kubernetesModule = "k8s.io/kubernetes@v1.37.2"

// schemaLocation is where kubeconform's local registry looks for a kind's schema within the
// schema directory: <kind>[-<first label of the group>]-<version>.json in lower case, the layout
// of kubeconform's pkg/registry (deployment-apps-v1.json, service-v1.json).
const schemaLocation = "{{ .ResourceKind }}{{ .KindSuffix }}.json"

// definitionsFile holds every definition of the swagger document; the kinds' schemas point into
// it.
const definitionsFile = "_definitions.json"

// gvk names a kind as a manifest does: apiVersion ("apps/v1", "v1") and kind.
type gvk struct {
	APIVersion string
	Kind       string
}

// schemaFileName returns the name kubeconform looks up for k, following schemaLocation.
func schemaFileName(k gvk) string {
	suffix := ""
	if group, version, ok := strings.Cut(k.APIVersion, "/"); ok {
		label, _, _ := strings.Cut(group, ".")
		suffix = "-" + label + "-" + version
	} else {
		suffix = "-" + k.APIVersion
	}
	return strings.ToLower(k.Kind + suffix + ".json")
}

// downloadSwagger fetches kubernetesModule with `go mod download -json`, run in workDir outside
// any module, and returns the path of its swagger.json in the module cache. The error carries the
// go command's own message, for example when the proxy cannot be reached.
func downloadSwagger(workDir string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", kubernetesModule)
	cmd.Dir = workDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var info struct {
		Dir   string
		Error string
	}
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil && runErr == nil {
		return "", fmt.Errorf("go mod download -json %s: decode its output: %w", kubernetesModule, err)
	}
	if runErr != nil || info.Error != "" {
		return "", fmt.Errorf("go mod download -json %s: %v: %s %s", kubernetesModule, runErr, info.Error, strings.TrimSpace(stderr.String()))
	}
	return filepath.Join(info.Dir, "api", "openapi-spec", "swagger.json"), nil
}

// writeSchemas writes strict JSON schemas for kinds into dir, generated from the swagger document
// at swaggerPath, for kubeconform's local registry (schemaLocation). It writes definitionsFile and
// one file per kind, and fails for a kind the document does not define. Following
// shared/notes/cluster-and-deployments.md section 6, every definition is converted by
// strictSchema: references point into definitionsFile, the x-kubernetes-* extensions go, every
// object with properties refuses other properties, and every property may also be null.
// IntOrString becomes a string or an integer, Quantity a string or a number.
func writeSchemas(swaggerPath, dir string, kinds []gvk) error {
	raw, err := os.ReadFile(swaggerPath)
	if err != nil {
		return fmt.Errorf("read the swagger document: %w", err)
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("decode %s: %w", swaggerPath, err)
	}

	definitions := make(map[string]any, len(doc.Definitions))
	byKind := map[gvk]string{}
	for name, def := range doc.Definitions {
		definitions[name] = definitionSchema(name, def)
		for _, k := range groupVersionKinds(def) {
			byKind[k] = name
		}
	}
	if err := writeJSON(filepath.Join(dir, definitionsFile), map[string]any{"definitions": definitions}); err != nil {
		return err
	}

	written := map[string]gvk{}
	for _, k := range kinds {
		name, ok := byKind[k]
		if !ok {
			return fmt.Errorf("%s %s is not a kind of %s", k.APIVersion, k.Kind, kubernetesModule)
		}
		file := schemaFileName(k)
		if other, dup := written[file]; dup && other != k {
			return fmt.Errorf("%s %s and %s %s would share the schema file %s", k.APIVersion, k.Kind, other.APIVersion, other.Kind, file)
		}
		written[file] = k
		if err := writeJSON(filepath.Join(dir, file), definitions[name]); err != nil {
			return err
		}
	}
	return nil
}

// groupVersionKinds returns the kinds a swagger definition serves, from its
// x-kubernetes-group-version-kind extension; most definitions serve none.
func groupVersionKinds(def map[string]any) []gvk {
	list, _ := def["x-kubernetes-group-version-kind"].([]any)
	var kinds []gvk
	for _, item := range list {
		m, _ := item.(map[string]any)
		group, _ := m["group"].(string)
		version, _ := m["version"].(string)
		kind, _ := m["kind"].(string)
		apiVersion := version
		if group != "" {
			apiVersion = group + "/" + version
		}
		kinds = append(kinds, gvk{APIVersion: apiVersion, Kind: kind})
	}
	return kinds
}

// definitionSchema returns the strict schema of the swagger definition name.
func definitionSchema(name string, def map[string]any) map[string]any {
	var types []any
	switch name {
	case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
		types = []any{"string", "integer"}
	case "io.k8s.apimachinery.pkg.api.resource.Quantity":
		types = []any{"string", "number"}
	default:
		return strictSchema(def)
	}
	s := map[string]any{"type": types}
	if d, ok := def["description"]; ok {
		s["description"] = d
	}
	return s
}

// strictSchema converts one OpenAPI v2 schema object, and the schemas nested in it, into a JSON
// schema (draft 4, which kubeconform compiles with) that refuses unknown fields. It walks only
// the keywords holding schemas (properties, items, additionalProperties), so a property that
// happens to be named like a keyword is left alone.
func strictSchema(s map[string]any) map[string]any {
	out := make(map[string]any, len(s)+1)
	for key, value := range s {
		switch {
		case strings.HasPrefix(key, "x-kubernetes-"):
			// Extensions for the API server (list types, merge keys); no JSON schema meaning.
		case key == "$ref":
			out[key] = definitionsFile + value.(string)
		case key == "properties":
			props := map[string]any{}
			for name, p := range value.(map[string]any) {
				props[name] = nullable(strictSchema(p.(map[string]any)))
			}
			out[key] = props
		case key == "items" || key == "additionalProperties":
			if nested, ok := value.(map[string]any); ok {
				out[key] = strictSchema(nested)
			} else {
				out[key] = value
			}
		default:
			out[key] = value
		}
	}
	if _, ok := s["properties"]; ok {
		if _, set := s["additionalProperties"]; !set {
			out["additionalProperties"] = false
		}
	}
	return out
}

// nullable lets a property's value be null as well, as the API server reads an explicit null as
// an absent field. A $ref ignores the keywords beside it in draft 4, so a reference is wrapped.
func nullable(s map[string]any) map[string]any {
	if ref, ok := s["$ref"]; ok {
		wrapped := map[string]any{"anyOf": []any{map[string]any{"$ref": ref}, map[string]any{"type": "null"}}}
		if d, ok := s["description"]; ok {
			wrapped["description"] = d
		}
		return wrapped
	}
	switch t := s["type"].(type) {
	case string:
		s["type"] = []any{t, "null"}
	case []any:
		s["type"] = append(t, "null")
	}
	return s
}

// writeJSON writes v as JSON to path.
func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write schema: %w", err)
	}
	return nil
}

// sortedKinds returns the distinct kinds of set in a stable order.
func sortedKinds(set map[gvk]bool) []gvk {
	kinds := make([]gvk, 0, len(set))
	for k := range set {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if kinds[i].APIVersion != kinds[j].APIVersion {
			return kinds[i].APIVersion < kinds[j].APIVersion
		}
		return kinds[i].Kind < kinds[j].Kind
	})
	return kinds
}
