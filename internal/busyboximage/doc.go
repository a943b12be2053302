// Package busyboximage builds an OCI image archive of busybox-static (one
// layer: the binary and its applet links, httpd among them) that
// containerd imports with no registry: the lab's workload image, and the
// image the node agent's tests run.
package busyboximage
