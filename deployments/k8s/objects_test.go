package k8s

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
)

// The types below decode the parts of the rendered resources the checks read. encoding/json
// matches field names case-insensitively, so the Kubernetes names need no tags.

// labelSelector is a LabelSelector of a workload, PodDisruptionBudget or NetworkPolicy.
type labelSelector struct {
	MatchLabels      map[string]string
	MatchExpressions []struct {
		Key, Operator string
		Values        []string
	}
}

// matches reports whether the selector selects a pod with labels. A nil selector selects
// nothing, an empty one everything, as for a NetworkPolicy's podSelector.
func (s *labelSelector) matches(labels map[string]string) bool {
	if s == nil {
		return false
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		got, has := labels[e.Key]
		var ok bool
		switch e.Operator {
		case "In":
			ok = has && slices.Contains(e.Values, got)
		case "NotIn":
			ok = !has || !slices.Contains(e.Values, got)
		case "Exists":
			ok = has
		case "DoesNotExist":
			ok = !has
		}
		if !ok {
			return false
		}
	}
	return true
}

// podTemplate is the pod template of a workload.
type podTemplate struct {
	Metadata struct{ Labels map[string]string }
	Spec     podSpec
}

// podSpec is the part of a PodSpec the checks read.
type podSpec struct {
	ServiceAccountName            string
	AutomountServiceAccountToken  *bool
	HostNetwork, HostPID, HostIPC bool
	TerminationGracePeriodSeconds *int64
	SecurityContext               *securityContext
	InitContainers, Containers    []container
	Volumes                       []volume
	TopologySpreadConstraints     []struct {
		TopologyKey   string
		LabelSelector *labelSelector
	}
}

// volume is a pod's volume: its name, its Secret if it is one, and the keys that tell its type.
type volume struct {
	Name   string
	Secret *struct {
		SecretName string
		Optional   *bool
	}
	// Source holds every key of the volume, to tell its type.
	Source map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the volume and keeps its keys in Source.
func (v *volume) UnmarshalJSON(data []byte) error {
	type plain volume
	if err := json.Unmarshal(data, (*plain)(v)); err != nil {
		return err
	}
	return json.Unmarshal(data, &v.Source)
}

// securityContext holds the fields of a PodSecurityContext or SecurityContext the restricted
// Pod Security Standard looks at.
type securityContext struct {
	RunAsNonRoot             *bool
	RunAsUser                *int64
	AllowPrivilegeEscalation *bool
	ReadOnlyRootFilesystem   *bool
	Privileged               *bool
	Capabilities             *struct{ Add, Drop []string }
	SeccompProfile           *struct{ Type string }
}

// keyRef is a secretKeyRef or configMapKeyRef.
type keyRef struct {
	Name, Key string
	Optional  *bool
}

// container is the part of a Container the checks read.
type container struct {
	Name, Image string
	Ports       []struct {
		Name          string
		ContainerPort int
	}
	Env []struct {
		Name, Value string
		ValueFrom   *struct{ SecretKeyRef, ConfigMapKeyRef *keyRef }
	}
	EnvFrom []struct {
		ConfigMapRef, SecretRef *struct {
			Name     string
			Optional *bool
		}
	}
	StartupProbe, ReadinessProbe, LivenessProbe *probe
	Resources                                   struct{ Requests, Limits map[string]any }
	SecurityContext                             *securityContext
}

// probe is a Probe, of whichever kind it is.
type probe struct {
	HTTPGet *struct {
		Path string
		Port intOrString
	}
	TCPSocket *struct{ Port intOrString }
	Exec      *struct{ Command []string }
	GRPC      *struct{ Port int }
}

// intOrString holds a port given by number or by name, as its text.
type intOrString string

// UnmarshalJSON reads a number or a string.
func (p *intOrString) UnmarshalJSON(data []byte) error {
	var n int
	if err := json.Unmarshal(data, &n); err == nil {
		*p = intOrString(strconv.Itoa(n))
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	*p = intOrString(s)
	return nil
}

// workload is a rendered resource that runs pods.
type workload struct {
	object
	Replicas *int32
	Template podTemplate
}

// containers returns the init containers and the containers of w's pods.
func (w workload) containers() []container {
	return append(slices.Clone(w.Template.Spec.InitContainers), w.Template.Spec.Containers...)
}

// longRunning reports whether the workload's pods are meant to keep running (not a Job).
func (w workload) longRunning() bool { return w.Kind != "Job" && w.Kind != "CronJob" }

// isService reports whether w is one of the policyhooks services' Deployments.
func (w workload) isService() bool {
	_, ok := services[w.Labels["app.kubernetes.io/name"]]
	return ok && w.Kind == "Deployment" && w.Labels["app.kubernetes.io/part-of"] == partOf
}

// decodeSpec decodes the spec of o into v.
func decodeSpec(o object, v any) error {
	var doc struct{ Spec json.RawMessage }
	if err := json.Unmarshal(o.JSON, &doc); err != nil {
		return err
	}
	return json.Unmarshal(doc.Spec, v)
}

// readWorkloads returns the resources of r that run pods, with their pod templates.
func readWorkloads(r rendering) ([]workload, error) {
	var out []workload
	for _, o := range r.objects {
		w := workload{object: o}
		var err error
		switch o.Kind {
		case "Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job":
			var spec struct {
				Replicas *int32
				Template podTemplate
			}
			err = decodeSpec(o, &spec)
			w.Replicas, w.Template = spec.Replicas, spec.Template
		case "CronJob":
			var spec struct {
				JobTemplate struct {
					Spec struct{ Template podTemplate }
				}
			}
			err = decodeSpec(o, &spec)
			w.Template = spec.JobTemplate.Spec.Template
		case "Pod", "ReplicationController":
			return nil, fmt.Errorf("%s: run pods from a Deployment, StatefulSet or Job", o)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", o, err)
		}
		out = append(out, w)
	}
	return out, nil
}

// objectsOf decodes the spec of every resource of kind in r into a T.
func objectsOf[T any](r rendering, kind string) ([]object, []T, error) {
	var objs []object
	var specs []T
	for _, o := range r.objects {
		if o.Kind != kind {
			continue
		}
		var spec T
		if err := decodeSpec(o, &spec); err != nil {
			return nil, nil, fmt.Errorf("decode %s: %w", o, err)
		}
		objs, specs = append(objs, o), append(specs, spec)
	}
	return objs, specs, nil
}

// pdbSpec is the spec of a PodDisruptionBudget.
type pdbSpec struct {
	Selector                     *labelSelector
	MaxUnavailable, MinAvailable *intOrString
}

// networkPolicyPort is a port of a NetworkPolicy rule; a missing port means every port.
type networkPolicyPort struct {
	Protocol string
	Port     *intOrString
}

// networkPolicySpec is the spec of a NetworkPolicy, with only the ports of its rules.
type networkPolicySpec struct {
	PodSelector *labelSelector
	PolicyTypes []string
	Ingress     []struct{ Ports []networkPolicyPort }
	Egress      []struct{ Ports []networkPolicyPort }
}

// hpaSpec is the spec of a HorizontalPodAutoscaler.
type hpaSpec struct {
	ScaleTargetRef struct{ APIVersion, Kind, Name string }
	MinReplicas    *int32
	MaxReplicas    int32
}

// configMapData returns the data of the ConfigMap name in namespace, if r renders it.
func configMapData(r rendering, namespace, name string) (map[string]string, bool) {
	for _, o := range r.objects {
		if o.Kind != "ConfigMap" || o.Name != name || o.Namespace != namespace {
			continue
		}
		var doc struct{ Data map[string]string }
		if err := json.Unmarshal(o.JSON, &doc); err != nil {
			return nil, false
		}
		return doc.Data, true
	}
	return nil, false
}

// envSource is where a container's environment variable gets its value: a literal or a
// ConfigMap (value), or a Secret (secret).
type envSource struct {
	value  string
	secret *keyRef
}

// resolveEnv returns the environment of container c of workload w as Kubernetes builds it:
// envFrom sources in order, then env, which wins. It reports ConfigMaps that r does not render.
func resolveEnv(r rendering, w workload, c container) (map[string]envSource, []string) {
	env := map[string]envSource{}
	var problems []string
	configMap := func(name string, optional *bool) map[string]string {
		data, ok := configMapData(r, w.Namespace, name)
		if !ok && !isTrue(optional) {
			problems = append(problems, fmt.Sprintf("%s container %s: ConfigMap %s is not rendered", w, c.Name, name))
		}
		return data
	}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef != nil {
			for k, v := range configMap(from.ConfigMapRef.Name, from.ConfigMapRef.Optional) {
				env[k] = envSource{value: v}
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envSource{value: e.Value}
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = envSource{secret: e.ValueFrom.SecretKeyRef}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			if v, ok := configMap(ref.Name, ref.Optional)[ref.Key]; ok {
				env[e.Name] = envSource{value: v}
			}
		}
	}
	return env, problems
}

// resolvePort returns the number of port p of container c, given by number or by name.
func resolvePort(c container, p intOrString) (int, bool) {
	if n, err := strconv.Atoi(string(p)); err == nil {
		return n, true
	}
	for _, cp := range c.Ports {
		if cp.Name == string(p) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// isTrue reports whether b is set and true.
func isTrue(b *bool) bool { return b != nil && *b }

// isFalse reports whether b is set and false.
func isFalse(b *bool) bool { return b != nil && !*b }
