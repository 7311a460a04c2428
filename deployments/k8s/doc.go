// Package k8s holds the Kubernetes manifests of policyhooks (a kustomize base, an example MongoDB
// replica set and values for the NATS Helm chart) and the test that renders and validates them.
package k8s
