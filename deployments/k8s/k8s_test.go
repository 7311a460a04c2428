package k8s

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/yannh/kubeconform/pkg/resource"
	"github.com/yannh/kubeconform/pkg/validator"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomizations are the directories the test renders with kustomize and checks.
var kustomizations = []string{"base", "mongodb", "overlays/example", "overlays/verify-egress"}

// verifyEgress is the rendering that adds components/config-verify-egress to the base.
const verifyEgress = "overlays/verify-egress"

// services are the policyhooks Deployments: the app.kubernetes.io/name of each, and the port its
// HTTP_ADDR serves /health, /ready and /metrics on.
var services = map[string]int{"config": 8080, "callback": 8081, "executor": 8082, "console": 8083}

// partOf is the app.kubernetes.io/part-of label of the policyhooks services' resources.
const partOf = "policyhooks"

// The renderings and the validator are built once per test binary, on first use, and shared by
// the tests; TestMain removes the schema directory at the end.
var (
	renderOnce sync.Once
	renderings []rendering
	renderErr  error

	schemaOnce sync.Once
	schemaDir  string
	strict     validator.Validator
	schemaErr  error
)

// TestMain runs the tests and then removes the generated schemas.
func TestMain(m *testing.M) {
	code := m.Run()
	if schemaDir != "" {
		os.RemoveAll(schemaDir)
	}
	os.Exit(code)
}

// loadRenderings returns every kustomization rendered, rendering them on first use.
func loadRenderings(t *testing.T) []rendering {
	t.Helper()
	renderOnce.Do(func() {
		for _, dir := range kustomizations {
			r, err := render(dir)
			if err != nil {
				renderErr = err
				return
			}
			renderings = append(renderings, r)
		}
	})
	if renderErr != nil {
		t.Fatal(renderErr)
	}
	return renderings
}

// loadValidator returns a strict kubeconform validator over schemas for every kind the
// kustomizations render, and for Deployment, which TestValidatorIsStrict uses. On first use it
// fetches kubernetesModule and writes the schemas into a new temporary directory. A failure to get
// the module (no module proxy, say) fails the test with the go command's message; nothing is
// skipped.
func loadValidator(t *testing.T) validator.Validator {
	t.Helper()
	rs := loadRenderings(t)
	schemaOnce.Do(func() {
		start := time.Now()
		kinds := map[gvk]bool{{APIVersion: "apps/v1", Kind: "Deployment"}: true}
		for _, r := range rs {
			for _, o := range r.objects {
				kinds[gvk{APIVersion: o.APIVersion, Kind: o.Kind}] = true
			}
		}
		dir, err := os.MkdirTemp("", "policyhooks-k8s-schemas-")
		if err != nil {
			schemaErr = err
			return
		}
		schemaDir = dir
		swagger, err := downloadSwagger(dir)
		if err == nil {
			err = writeSchemas(swagger, dir, sortedKinds(kinds))
		}
		if err == nil {
			strict, err = validator.New([]string{filepath.Join(dir, schemaLocation)}, validator.Opts{Strict: true})
		}
		if err != nil {
			schemaErr = fmt.Errorf("schemas from %s: %w", kubernetesModule, err)
			return
		}
		t.Logf("schemas for %d kinds from %s in %s", len(kinds), kubernetesModule, time.Since(start).Round(time.Millisecond))
	})
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	return strict
}

// rendering is the output of one kustomization.
type rendering struct {
	dir     string
	objects []object
}

// object is one rendered resource: its identity, its YAML (what kubeconform reads) and its JSON
// (what the policy checks decode).
type object struct {
	APIVersion, Kind, Name, Namespace string
	Labels                            map[string]string
	YAML, JSON                        []byte
}

// String names the object as Kind/name, as kubectl does.
func (o object) String() string { return o.Kind + "/" + o.Name }

// render builds the kustomization in dir with kustomize's krusty, as `kustomize build dir` does.
func render(dir string) (rendering, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return rendering{}, err
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		return rendering{}, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	r := rendering{dir: dir}
	for _, res := range m.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			return rendering{}, fmt.Errorf("%s: %s as YAML: %w", dir, res.CurId(), err)
		}
		j, err := res.MarshalJSON()
		if err != nil {
			return rendering{}, fmt.Errorf("%s: %s as JSON: %w", dir, res.CurId(), err)
		}
		r.objects = append(r.objects, object{
			APIVersion: res.GetApiVersion(), Kind: res.GetKind(), Name: res.GetName(),
			Namespace: res.GetNamespace(), Labels: res.GetLabels(), YAML: y, JSON: j,
		})
	}
	if len(r.objects) == 0 {
		return rendering{}, fmt.Errorf("kustomize build %s: no resources", dir)
	}
	return r, nil
}

// TestManifestsValidate checks every rendered resource against the Kubernetes v1.37 API schema
// with kubeconform in strict mode: unknown or misspelled fields, wrong types and missing required
// fields all fail.
func TestManifestsValidate(t *testing.T) {
	v := loadValidator(t)
	for _, r := range loadRenderings(t) {
		t.Run(r.dir, func(t *testing.T) {
			for _, o := range r.objects {
				res := v.ValidateResource(resource.Resource{Path: r.dir, Bytes: o.YAML})
				if res.Status != validator.Valid {
					t.Errorf("%s: status %d, want valid: %v %s", o, res.Status, res.Err, formatValidationErrors(res.ValidationErrors))
				}
			}
		})
	}
}

// formatValidationErrors lists kubeconform's findings one per line, with the field's path.
func formatValidationErrors(errs []validator.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "\n\t%s: %s", e.Path, e.Msg)
	}
	return b.String()
}

// validDeployment is a small Deployment the schema accepts; TestValidatorIsStrict breaks it in
// one place per case.
const validDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: probe
  labels:
    app: probe
spec:
  replicas: 2
  selector:
    matchLabels:
      app: probe
  template:
    metadata:
      labels:
        app: probe
    spec:
      containers:
      - name: probe
        image: registry.invalid/probe:1
        readinessProbe:
          httpGet:
            path: /ready
            port: 8080
        resources:
          limits:
            cpu: 1
            memory: 64Mi
`

// TestValidatorIsStrict proves the generated schemas are strict: each case changes one thing in
// validDeployment that the API server would refuse or silently drop, and kubeconform must find
// it. The unchanged Deployment must pass, so a failure is the change's and not the schema's.
func TestValidatorIsStrict(t *testing.T) {
	v := loadValidator(t)
	cases := []struct {
		name, old, new string
		mention        string // a word the validation error must contain; empty for any
	}{
		{name: "unchanged"},
		{name: "misspelled field", old: "readinessProbe:", new: "readinesProbe:", mention: "readinesProbe"},
		{name: "unknown metadata field", old: "  labels:\n    app: probe\nspec:", new: "  lables:\n    app: probe\nspec:", mention: "lables"},
		{name: "replicas as a string", old: "replicas: 2", new: `replicas: "2"`, mention: "replicas"},
		{name: "container without a name", old: "      - name: probe\n        image:", new: "      - image:", mention: "name"},
		{name: "probe port as a list", old: "port: 8080", new: "port: [8080]", mention: "port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := validDeployment
			if tc.old != "" {
				if !strings.Contains(doc, tc.old) {
					t.Fatalf("validDeployment has no %q to change", tc.old)
				}
				doc = strings.Replace(doc, tc.old, tc.new, 1)
			}
			res := v.ValidateResource(resource.Resource{Path: tc.name, Bytes: []byte(doc)})
			if tc.old == "" {
				if res.Status != validator.Valid {
					t.Fatalf("status %d, want valid: %v %s", res.Status, res.Err, formatValidationErrors(res.ValidationErrors))
				}
				return
			}
			if res.Status != validator.Invalid {
				t.Fatalf("status %d (err %v), want invalid", res.Status, res.Err)
			}
			if msg := fmt.Sprint(res.Err) + formatValidationErrors(res.ValidationErrors); !strings.Contains(msg, tc.mention) {
				t.Errorf("error %q does not mention %q", msg, tc.mention)
			}
		})
	}
}

// TestPolicies checks the properties the manifests promise (README.md) on every rendering:
// probes, resources, the restricted Pod Security Standard, pinned images, disruption budgets,
// network policies, spreading, replicas and the settings the services depend on.
func TestPolicies(t *testing.T) {
	rs := loadRenderings(t)
	policies := []struct {
		name  string
		check func(r rendering) []string
	}{
		{"services probe /ready and /health on their HTTP_ADDR port", checkServiceProbes},
		{"other long-running containers have readiness and liveness probes", checkOtherProbes},
		{"containers request and limit cpu and memory", checkResources},
		{"pods meet the restricted Pod Security Standard", checkRestricted},
		{"pods do not mount a service account token", checkNoServiceAccountToken},
		{"images carry a tag other than latest, or a digest", checkImages},
		{"Deployments and StatefulSets have a PodDisruptionBudget", checkDisruptionBudgets},
		{"pods are selected by a default-deny NetworkPolicy, services open only their ports", checkDefaultDeny},
		{"replicated pods spread over nodes and zones", checkTopologySpread},
		{"no Secret with data is rendered", checkNoSecretData},
		{"config and callback run 2 replicas, the executor 2 or more through its HPA", checkReplicas},
		{"the executor's grace period covers its shutdown grace", checkExecutorShutdown},
		{"services get the three NATS servers and NATS_REPLICAS=3", checkNATSSettings},
	}
	for _, r := range rs {
		for _, p := range policies {
			t.Run(r.dir+"/"+p.name, func(t *testing.T) {
				for _, problem := range p.check(r) {
					t.Error(problem)
				}
			})
		}
	}
}

// TestSecretsDocumented checks that README.md tells how to create every Secret key the pods
// need: each required secretKeyRef and secretRef must appear in a `kubectl create secret generic`
// command there.
func TestSecretsDocumented(t *testing.T) {
	rs := loadRenderings(t)
	documented, err := readmeSecrets("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		ws, err := readWorkloads(r)
		if err != nil {
			t.Fatalf("%s: %v", r.dir, err)
		}
		for _, w := range ws {
			for _, c := range w.containers() {
				for _, e := range c.Env {
					if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || isTrue(e.ValueFrom.SecretKeyRef.Optional) {
						continue
					}
					ref := e.ValueFrom.SecretKeyRef
					if !documented[ref.Name][ref.Key] {
						t.Errorf("%s: %s container %s: key %s of Secret %s is not created in README.md", r.dir, w, c.Name, ref.Key, ref.Name)
					}
				}
				for _, e := range c.EnvFrom {
					if e.SecretRef != nil && !isTrue(e.SecretRef.Optional) && documented[e.SecretRef.Name] == nil {
						t.Errorf("%s: %s container %s: Secret %s is not created in README.md", r.dir, w, c.Name, e.SecretRef.Name)
					}
				}
			}
			for _, v := range w.Template.Spec.Volumes {
				if v.Secret != nil && !isTrue(v.Secret.Optional) && documented[v.Secret.SecretName] == nil {
					t.Errorf("%s: %s volume %s: Secret %s is not created in README.md", r.dir, w, v.Name, v.Secret.SecretName)
				}
			}
		}
	}
}

// createSecret matches the start of a `kubectl create secret generic NAME` command, and
// secretKey each --from-literal=KEY= or --from-file=KEY= of it.
var (
	createSecret = regexp.MustCompile(`kubectl\b.*\bcreate secret generic ([a-z0-9.-]+)`)
	secretKey    = regexp.MustCompile(`--from-(?:literal|file)=([A-Za-z0-9._-]+)=`)
)

// readmeSecrets returns the keys of each Secret the `kubectl create secret generic` commands in
// the file at path create. A command continues over lines ending in a backslash.
func readmeSecrets(path string) (map[string]map[string]bool, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	secrets := map[string]map[string]bool{}
	var current string
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		line := scanner.Text()
		if m := createSecret.FindStringSubmatch(line); m != nil {
			current = m[1]
			if secrets[current] == nil {
				secrets[current] = map[string]bool{}
			}
		}
		if current == "" {
			continue
		}
		for _, m := range secretKey.FindAllStringSubmatch(line, -1) {
			secrets[current][m[1]] = true
		}
		if !strings.HasSuffix(strings.TrimSpace(line), `\`) {
			current = ""
		}
	}
	return secrets, scanner.Err()
}

// The checks below each return the problems they find in one rendering, one sentence each.

// hasServices reports whether r renders the policyhooks services (base and its overlays do).
func hasServices(r rendering) bool {
	for _, o := range r.objects {
		if o.Labels["app.kubernetes.io/part-of"] == partOf {
			return true
		}
	}
	return false
}

// serviceWorkloads returns the services' Deployments of r by name, with a problem for each that
// does not run exactly one container, and for each missing from a rendering that has services.
func serviceWorkloads(r rendering) (map[string]workload, []string) {
	ws, err := readWorkloads(r)
	if err != nil {
		return nil, []string{err.Error()}
	}
	found := map[string]workload{}
	seen := map[string]bool{}
	var problems []string
	for _, w := range ws {
		if !w.isService() {
			continue
		}
		seen[w.Labels["app.kubernetes.io/name"]] = true
		if n := len(w.Template.Spec.Containers); n != 1 {
			problems = append(problems, fmt.Sprintf("%s: %d containers, want 1", w, n))
			continue
		}
		found[w.Labels["app.kubernetes.io/name"]] = w
	}
	if hasServices(r) {
		for name := range services {
			if !seen[name] {
				problems = append(problems, fmt.Sprintf("no Deployment labelled app.kubernetes.io/name=%s, app.kubernetes.io/part-of=%s", name, partOf))
			}
		}
	}
	return found, problems
}

// forEachWorkload calls check for each workload of r and gathers the problems.
func forEachWorkload(r rendering, check func(w workload) []string) []string {
	ws, err := readWorkloads(r)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	for _, w := range ws {
		problems = append(problems, check(w)...)
	}
	return problems
}

// checkServiceProbes wants each service's HTTP_ADDR on its port, and its readiness probe on
// /ready and its liveness and startup probes on /health, on that port.
func checkServiceProbes(r rendering) []string {
	found, problems := serviceWorkloads(r)
	for name, w := range found {
		want := services[name]
		c := w.Template.Spec.Containers[0]
		env, envProblems := resolveEnv(r, w, c)
		problems = append(problems, envProblems...)
		addr := env["HTTP_ADDR"].value
		if _, port, _ := strings.Cut(addr, ":"); port != strconv.Itoa(want) {
			problems = append(problems, fmt.Sprintf("%s: HTTP_ADDR %q, want :%d", w, addr, want))
		}
		for _, p := range []struct {
			kind, path string
			probe      *probe
		}{
			{"readiness", "/ready", c.ReadinessProbe},
			{"liveness", "/health", c.LivenessProbe},
			{"startup", "/health", c.StartupProbe},
		} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				problems = append(problems, fmt.Sprintf("%s: no HTTP %s probe", w, p.kind))
				continue
			}
			port, ok := resolvePort(c, p.probe.HTTPGet.Port)
			if got := p.probe.HTTPGet.Path; got != p.path || !ok || port != want {
				problems = append(problems, fmt.Sprintf("%s: %s probe GET %s on port %q (%d), want GET %s on %d", w, p.kind, got, p.probe.HTTPGet.Port, port, p.path, want))
			}
		}
	}
	return problems
}

// checkOtherProbes wants readiness and liveness probes, of any kind, on the containers of the
// other long-running workloads (MongoDB).
func checkOtherProbes(r rendering) []string {
	return forEachWorkload(r, func(w workload) []string {
		if w.isService() || !w.longRunning() {
			return nil
		}
		var problems []string
		for _, c := range w.Template.Spec.Containers {
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				problems = append(problems, fmt.Sprintf("%s container %s: readiness %t, liveness %t, want both", w, c.Name, c.ReadinessProbe != nil, c.LivenessProbe != nil))
			}
		}
		return problems
	})
}

// checkResources wants cpu and memory requests and limits on every container, init containers
// included.
func checkResources(r rendering) []string {
	return forEachWorkload(r, func(w workload) []string {
		var problems []string
		for _, c := range w.containers() {
			for _, res := range []string{"cpu", "memory"} {
				if _, ok := c.Resources.Requests[res]; !ok {
					problems = append(problems, fmt.Sprintf("%s container %s: no %s request", w, c.Name, res))
				}
				if _, ok := c.Resources.Limits[res]; !ok {
					problems = append(problems, fmt.Sprintf("%s container %s: no %s limit", w, c.Name, res))
				}
			}
		}
		return problems
	})
}

// restrictedVolumes are the volume types the restricted Pod Security Standard allows.
var restrictedVolumes = []string{"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}

// checkRestricted wants every pod to meet the restricted Pod Security Standard: no host
// namespaces, only its volume types, and per container (with the pod's settings where the
// container sets none) a non-root user (65532 for the services), no privilege escalation, all
// capabilities dropped, the RuntimeDefault seccomp profile and a read-only root file system.
func checkRestricted(r rendering) []string {
	return forEachWorkload(r, func(w workload) []string {
		var problems []string
		add := func(format string, args ...any) {
			problems = append(problems, fmt.Sprintf("%s: ", w)+fmt.Sprintf(format, args...))
		}
		spec := w.Template.Spec
		if spec.HostNetwork || spec.HostPID || spec.HostIPC {
			add("shares a host namespace")
		}
		for _, v := range spec.Volumes {
			for key := range v.Source {
				if key != "name" && !slices.Contains(restrictedVolumes, key) {
					add("volume %s is of type %s", v.Name, key)
				}
			}
		}
		pod := spec.SecurityContext
		if pod == nil {
			pod = &securityContext{}
		}
		for _, c := range w.containers() {
			sc := c.SecurityContext
			if sc == nil {
				sc = &securityContext{}
			}
			// The pod's settings apply where the container sets none.
			runAsNonRoot, runAsUser, seccomp := sc.RunAsNonRoot, sc.RunAsUser, sc.SeccompProfile
			if runAsNonRoot == nil {
				runAsNonRoot = pod.RunAsNonRoot
			}
			if runAsUser == nil {
				runAsUser = pod.RunAsUser
			}
			if seccomp == nil {
				seccomp = pod.SeccompProfile
			}
			if !isTrue(runAsNonRoot) {
				add("container %s: runAsNonRoot is not true", c.Name)
			}
			switch {
			case runAsUser == nil || *runAsUser == 0:
				add("container %s: runAsUser is not a non-root user id", c.Name)
			case w.isService() && *runAsUser != 65532:
				add("container %s: runAsUser %d, want 65532 (the images' nonroot user)", c.Name, *runAsUser)
			}
			if !isFalse(sc.AllowPrivilegeEscalation) {
				add("container %s: allowPrivilegeEscalation is not false", c.Name)
			}
			if isTrue(sc.Privileged) {
				add("container %s: privileged", c.Name)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				add("container %s: capabilities must drop ALL and add none", c.Name)
			}
			if seccomp == nil || (seccomp.Type != "RuntimeDefault" && seccomp.Type != "Localhost") {
				add("container %s: seccompProfile is not RuntimeDefault", c.Name)
			}
			if !isTrue(sc.ReadOnlyRootFilesystem) {
				add("container %s: readOnlyRootFilesystem is not true", c.Name)
			}
		}
		return problems
	})
}

// checkNoServiceAccountToken wants every pod to run as a ServiceAccount rendered with it, without
// an API token mounted.
func checkNoServiceAccountToken(r rendering) []string {
	accounts := map[string]bool{}
	for _, o := range r.objects {
		if o.Kind == "ServiceAccount" {
			accounts[o.Namespace+"/"+o.Name] = true
		}
	}
	return forEachWorkload(r, func(w workload) []string {
		var problems []string
		spec := w.Template.Spec
		if !isFalse(spec.AutomountServiceAccountToken) {
			problems = append(problems, fmt.Sprintf("%s: automountServiceAccountToken is not false", w))
		}
		if !accounts[w.Namespace+"/"+spec.ServiceAccountName] {
			problems = append(problems, fmt.Sprintf("%s: runs as ServiceAccount %q, which is not rendered here", w, spec.ServiceAccountName))
		}
		return problems
	})
}

// checkImages wants every image pinned by a digest or a tag other than latest.
func checkImages(r rendering) []string {
	return forEachWorkload(r, func(w workload) []string {
		var problems []string
		for _, c := range w.containers() {
			if strings.Contains(c.Image, "@sha256:") {
				continue
			}
			last := c.Image[strings.LastIndex(c.Image, "/")+1:]
			if _, tag, ok := strings.Cut(last, ":"); !ok || tag == "latest" {
				problems = append(problems, fmt.Sprintf("%s container %s: image %q has no tag but latest and no digest", w, c.Name, c.Image))
			}
		}
		return problems
	})
}

// checkDisruptionBudgets wants a PodDisruptionBudget selecting the pods of every Deployment and
// StatefulSet.
func checkDisruptionBudgets(r rendering) []string {
	objs, pdbs, err := objectsOf[pdbSpec](r, "PodDisruptionBudget")
	if err != nil {
		return []string{err.Error()}
	}
	return forEachWorkload(r, func(w workload) []string {
		if w.Kind != "Deployment" && w.Kind != "StatefulSet" {
			return nil
		}
		for i, pdb := range pdbs {
			if objs[i].Namespace == w.Namespace && pdb.Selector.matches(w.Template.Metadata.Labels) &&
				(pdb.MaxUnavailable != nil || pdb.MinAvailable != nil) {
				return nil
			}
		}
		return []string{fmt.Sprintf("%s: no PodDisruptionBudget with maxUnavailable or minAvailable selects its pods", w)}
	})
}

// checkDefaultDeny wants every pod selected by a NetworkPolicy that denies all ingress and
// egress, and each service's pods opened exactly as serviceTraffic lists.
func checkDefaultDeny(r rendering) []string {
	objs, policies, err := objectsOf[networkPolicySpec](r, "NetworkPolicy")
	if err != nil {
		return []string{err.Error()}
	}
	problems := forEachWorkload(r, func(w workload) []string {
		for i, p := range policies {
			if objs[i].Namespace == w.Namespace && p.PodSelector.matches(w.Template.Metadata.Labels) &&
				slices.Contains(p.PolicyTypes, "Ingress") && slices.Contains(p.PolicyTypes, "Egress") &&
				len(p.Ingress) == 0 && len(p.Egress) == 0 {
				return nil
			}
		}
		return []string{fmt.Sprintf("%s: no NetworkPolicy denies all ingress and egress of its pods", w)}
	})
	return append(problems, checkServiceTraffic(r, objs, policies)...)
}

// serviceTraffic is what the NetworkPolicies may open for each service's pods, and no more:
// protocol/port of ingress and of egress, a named port given by its number. Only the executor
// reaches outside the cluster (HTTPS), unless a rendering adds the component that lets config do
// so for ?verify=true (verifyEgress).
var serviceTraffic = map[string]struct{ ingress, egress []string }{
	// The API; MongoDB.
	"config": {ingress: []string{"TCP/8080"}, egress: []string{"TCP/27017", "TCP/4222", "TCP/53", "UDP/53"}},
	// The API.
	"callback": {ingress: []string{"TCP/8081"}, egress: []string{"TCP/4222", "TCP/53", "UDP/53"}},
	// Metrics; webhooks over HTTPS.
	"executor": {ingress: []string{"TCP/8082"}, egress: []string{"TCP/4222", "TCP/443", "TCP/53", "UDP/53"}},
	// The console's page and proxy; the config and callback APIs, and no NATS.
	"console": {ingress: []string{"TCP/8083"}, egress: []string{"TCP/53", "TCP/8080", "TCP/8081", "UDP/53"}},
}

// checkServiceTraffic compares the ports the NetworkPolicies open for each service's pods with
// serviceTraffic. A rule without ports opens every port and shows as "*".
func checkServiceTraffic(r rendering, objs []object, policies []networkPolicySpec) []string {
	found, problems := serviceWorkloads(r)
	for name, w := range found {
		c := w.Template.Spec.Containers[0]
		open := map[string]map[string]bool{"ingress": {}, "egress": {}}
		note := func(direction string, ports []networkPolicyPort) {
			if len(ports) == 0 {
				open[direction]["*"] = true
			}
			for _, p := range ports {
				protocol := p.Protocol
				if protocol == "" {
					protocol = "TCP"
				}
				port := "*"
				if p.Port != nil {
					port = string(*p.Port)
					if n, ok := resolvePort(c, *p.Port); ok {
						port = strconv.Itoa(n)
					}
				}
				open[direction][protocol+"/"+port] = true
			}
		}
		for i, p := range policies {
			if objs[i].Namespace != w.Namespace || !p.PodSelector.matches(w.Template.Metadata.Labels) {
				continue
			}
			for _, rule := range p.Ingress {
				note("ingress", rule.Ports)
			}
			for _, rule := range p.Egress {
				note("egress", rule.Ports)
			}
		}
		want := serviceTraffic[name]
		if name == "config" && r.dir == verifyEgress {
			want.egress = slices.Sorted(slices.Values(append(slices.Clone(want.egress), "TCP/443")))
		}
		for direction, wantPorts := range map[string][]string{"ingress": want.ingress, "egress": want.egress} {
			got := slices.Sorted(maps.Keys(open[direction]))
			if !slices.Equal(got, wantPorts) {
				problems = append(problems, fmt.Sprintf("%s: NetworkPolicies open %s %v, want %v", w, direction, got, wantPorts))
			}
		}
	}
	return problems
}

// checkTopologySpread wants the pods of every long-running workload that may run more than one
// replica spread over nodes and zones.
func checkTopologySpread(r rendering) []string {
	objs, hpas, err := objectsOf[hpaSpec](r, "HorizontalPodAutoscaler")
	if err != nil {
		return []string{err.Error()}
	}
	return forEachWorkload(r, func(w workload) []string {
		if !w.longRunning() {
			return nil
		}
		replicas := int32(1)
		if w.Replicas != nil {
			replicas = *w.Replicas
		}
		for i, h := range hpas {
			if objs[i].Namespace == w.Namespace && h.ScaleTargetRef.Kind == w.Kind && h.ScaleTargetRef.Name == w.Name {
				replicas = max(replicas, h.MaxReplicas)
			}
		}
		if replicas < 2 {
			return nil
		}
		var problems []string
		for _, key := range []string{"kubernetes.io/hostname", "topology.kubernetes.io/zone"} {
			spread := false
			for _, tsc := range w.Template.Spec.TopologySpreadConstraints {
				spread = spread || (tsc.TopologyKey == key && tsc.LabelSelector.matches(w.Template.Metadata.Labels))
			}
			if !spread {
				problems = append(problems, fmt.Sprintf("%s: %d replicas and no topologySpreadConstraint over %s selecting its pods", w, replicas, key))
			}
		}
		return problems
	})
}

// checkNoSecretData refuses any rendered Secret that holds data.
func checkNoSecretData(r rendering) []string {
	var problems []string
	for _, o := range r.objects {
		if o.Kind != "Secret" {
			continue
		}
		var doc struct{ Data, StringData map[string]any }
		if err := json.Unmarshal(o.JSON, &doc); err != nil {
			problems = append(problems, fmt.Sprintf("decode %s: %v", o, err))
		}
		if len(doc.Data) > 0 || len(doc.StringData) > 0 {
			problems = append(problems, fmt.Sprintf("%s holds data: Secrets are created by hand (README.md), never committed", o))
		}
	}
	return problems
}

// checkReplicas wants 2 replicas of config and callback, and for the executor no replica count
// but a HorizontalPodAutoscaler starting at 2; every HorizontalPodAutoscaler must scale a service.
func checkReplicas(r rendering) []string {
	found, problems := serviceWorkloads(r)
	objs, hpas, err := objectsOf[hpaSpec](r, "HorizontalPodAutoscaler")
	if err != nil {
		return append(problems, err.Error())
	}
	for i, h := range hpas {
		target := h.ScaleTargetRef
		ok := false
		for _, w := range found {
			ok = ok || (target.Kind == w.Kind && target.Name == w.Name && objs[i].Namespace == w.Namespace)
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("%s scales %s/%s, which is not a service rendered here", objs[i], target.Kind, target.Name))
		}
	}
	for name, w := range found {
		var hpa *hpaSpec
		for i := range hpas {
			if hpas[i].ScaleTargetRef.Kind == w.Kind && hpas[i].ScaleTargetRef.Name == w.Name {
				hpa = &hpas[i]
			}
		}
		switch name {
		case "executor":
			if w.Replicas != nil {
				problems = append(problems, fmt.Sprintf("%s: sets replicas %d, which its HorizontalPodAutoscaler owns", w, *w.Replicas))
			}
			if hpa == nil || hpa.MinReplicas == nil || *hpa.MinReplicas != 2 || hpa.MaxReplicas < 2 {
				problems = append(problems, fmt.Sprintf("%s: want a HorizontalPodAutoscaler from 2 replicas", w))
			}
		default:
			if w.Replicas == nil || *w.Replicas != 2 {
				problems = append(problems, fmt.Sprintf("%s: replicas %v, want 2", w, w.Replicas))
			}
			if hpa != nil {
				problems = append(problems, fmt.Sprintf("%s: has a HorizontalPodAutoscaler, want a fixed count", w))
			}
		}
	}
	return problems
}

// executorAckWait is the executor's JetStream ack wait (services/executor/app, not configurable).
const executorAckWait = 30 * time.Second

// checkExecutorShutdown wants EXECUTOR_SHUTDOWN_GRACE below the ack wait, and the executor's
// terminationGracePeriodSeconds at 60, at least 10 s above that grace.
func checkExecutorShutdown(r rendering) []string {
	found, problems := serviceWorkloads(r)
	w, ok := found["executor"]
	if !ok {
		return problems
	}
	env, envProblems := resolveEnv(r, w, w.Template.Spec.Containers[0])
	problems = append(problems, envProblems...)
	grace, err := time.ParseDuration(env["EXECUTOR_SHUTDOWN_GRACE"].value)
	if err != nil {
		return append(problems, fmt.Sprintf("%s: EXECUTOR_SHUTDOWN_GRACE: %v", w, err))
	}
	if grace >= executorAckWait {
		problems = append(problems, fmt.Sprintf("%s: EXECUTOR_SHUTDOWN_GRACE %s, want below the %s ack wait", w, grace, executorAckWait))
	}
	period := w.Template.Spec.TerminationGracePeriodSeconds
	if period == nil || *period != 60 {
		problems = append(problems, fmt.Sprintf("%s: terminationGracePeriodSeconds %v, want 60", w, period))
	} else if time.Duration(*period)*time.Second < grace+10*time.Second {
		problems = append(problems, fmt.Sprintf("%s: terminationGracePeriodSeconds %d leaves under 10 s above EXECUTOR_SHUTDOWN_GRACE %s", w, *period, grace))
	}
	return problems
}

// secretOnly are the settings that must come from a Secret, per service that needs them.
var secretOnly = map[string][]string{
	"config":   {"APP_ENCRYPTION_KEY", "OAUTH_ROOT_CLIENT_ID", "OAUTH_ROOT_CLIENT_SECRET", "MONGODB_URI"},
	"callback": {"APP_ENCRYPTION_KEY", "OAUTH_ROOT_CLIENT_ID"},
	"executor": {"APP_ENCRYPTION_KEY"},
}

// withoutNATS are the services that use no NATS (and get no NATS settings): the console.
var withoutNATS = []string{"console"}

// checkNATSSettings wants every service but withoutNATS given the three NATS servers and
// NATS_REPLICAS=3, every one JSON logs, and the settings of secretOnly from required Secret keys;
// the console gets no NATS setting and no Secret.
func checkNATSSettings(r rendering) []string {
	found, problems := serviceWorkloads(r)
	wantURL := "nats://nats-0.nats:4222,nats://nats-1.nats:4222,nats://nats-2.nats:4222"
	for name, w := range found {
		env, envProblems := resolveEnv(r, w, w.Template.Spec.Containers[0])
		problems = append(problems, envProblems...)
		want := map[string]string{"NATS_URL": wantURL, "NATS_REPLICAS": "3", "LOG_FORMAT": "json"}
		if slices.Contains(withoutNATS, name) {
			want = map[string]string{"NATS_URL": "", "NATS_REPLICAS": "", "LOG_FORMAT": "json", "APP_ENCRYPTION_KEY": ""}
		}
		for k, want := range want {
			if got := env[k]; got.secret != nil || got.value != want {
				problems = append(problems, fmt.Sprintf("%s: %s=%q, want %q", w, k, got.value, want))
			}
		}
		for _, k := range secretOnly[name] {
			if env[k].secret == nil || isTrue(env[k].secret.Optional) {
				problems = append(problems, fmt.Sprintf("%s: %s does not come from a required Secret key", w, k))
			}
		}
	}
	return problems
}
