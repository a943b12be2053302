// Command incluster is what a pod's program does with the API: client-go's
// in-cluster config (the service-account token and CA the agent projects,
// KUBERNETES_SERVICE_HOST/PORT from the environment), a list it may do and
// one its ServiceAccount may not. The e2e tests build it statically and run
// it in a busybox pod, whose own wget cannot speak TLS 1.2 as RFC 9155 asks.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func main() {
	if err := run(); err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	ns, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fmt.Println("host", cfg.Host)
	pods, err := cs.CoreV1().Pods(strings.TrimSpace(string(ns))).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	fmt.Println("pods", len(pods.Items))

	// The same by name: Go's resolver applies resolv.conf's search list
	// (ndots:5), as glibc's does, so the short names resolve too.
	for _, name := range []string{"kubernetes.default", "kubernetes.default.svc"} {
		addrs, err := net.DefaultResolver.LookupHost(ctx, name)
		if err != nil {
			return fmt.Errorf("resolve %s: %w", name, err)
		}
		fmt.Println("resolved", name, strings.Join(addrs, ","))
	}
	byName := rest.CopyConfig(cfg)
	byName.Host = "https://kubernetes.default.svc"
	csByName, err := kubernetes.NewForConfig(byName)
	if err != nil {
		return err
	}
	pods, err = csByName.CoreV1().Pods(strings.TrimSpace(string(ns))).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods through %s: %w", byName.Host, err)
	}
	fmt.Println("pods via", byName.Host, len(pods.Items))
	_, err = cs.CoreV1().Secrets(strings.TrimSpace(string(ns))).List(ctx, metav1.ListOptions{})
	switch {
	case apierrors.IsForbidden(err):
		fmt.Println("secrets forbidden")
	case err != nil:
		return fmt.Errorf("list secrets: %w", err)
	default:
		fmt.Println("secrets allowed")
	}
	return nil
}
