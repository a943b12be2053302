package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"kforge.dev/kforge/controlplane/local"
	"kforge.dev/kforge/controlplane/scheduler"
)

const (
	benchScheduler = "bench-scheduler"
	benchNamespace = "default"
	zoneLabel      = "topology.kubernetes.io/zone"
	hostnameLabel  = "kubernetes.io/hostname"
	groupLabel     = "app"
)

type result struct {
	nodes, pods            int
	variant                string
	bound                  int
	createRate, rate       float64
	p50, p99               time.Duration
	usedNodes              int
	minPerNode, maxPerNode int
	broken                 string
}

// runCase brings up a fresh control plane, the nodes, the scheduler and
// the pods, waits until every pod is bound (or o.timeout), and measures.
func runCase(ctx context.Context, o options, c benchCase, variant string) (result, error) {
	r := result{nodes: c.nodes, pods: c.pods, variant: variant}
	dir, err := os.MkdirTemp("", "kforge-schedbench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	cpCtx, stopCP := context.WithCancel(ctx)
	upDone := make(chan error, 1)
	go func() {
		upDone <- local.Up(cpCtx, local.Options{Dir: dir, Port: 0, Logger: slog.New(slog.DiscardHandler)})
	}()
	defer func() {
		stopCP()
		<-upDone
	}()
	path := local.KubeconfigPath(dir)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		select {
		case err := <-upDone:
			upDone <- err
			return r, fmt.Errorf("control plane stopped: %v", err)
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	admin, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return r, err
	}
	admin.QPS, admin.Burst = 5000, 5000
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return r, err
	}

	progress("creating %d nodes", c.nodes)
	if err := createNodes(ctx, cs, o, c.nodes); err != nil {
		return r, err
	}
	leaseCtx, stopLeases := context.WithCancel(ctx)
	var leaseWG sync.WaitGroup
	leaseWG.Add(1)
	go func() { defer leaseWG.Done(); renewLeases(leaseCtx, cs, c.nodes) }()
	defer func() { stopLeases(); leaseWG.Wait() }()

	// The watch that times the binds.
	var mu sync.Mutex
	created := make(map[string]time.Time, c.pods)
	bound := make(map[string]time.Time, c.pods)
	nodeOf := make(map[string]string, c.pods)
	allBound := make(chan struct{})
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(benchNamespace))
	seen := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Spec.NodeName == "" || p.Spec.SchedulerName != benchScheduler {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if _, ok := bound[p.Name]; ok {
			return
		}
		bound[p.Name] = now
		nodeOf[p.Name] = p.Spec.NodeName
		if len(bound) == c.pods {
			close(allBound)
		}
	}
	if _, err := f.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: seen, UpdateFunc: func(_, obj any) { seen(obj) },
	}); err != nil {
		return r, err
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	f.Start(watchCtx.Done())
	defer func() {
		stopWatch()
		f.Shutdown()
	}()
	f.WaitForCacheSync(watchCtx.Done())

	startScheduler := func() (func(), error) {
		// The scheduler under test, with the identity `kforge local up` gives
		// its own (system:kube-scheduler).
		cfg := scheduler.NewConfig()
		cfg.SchedulerName = benchScheduler
		cfg.HealthAddress = ""
		cfg.LeaderElection.Enabled = false
		cfg.Kubeconfig = filepath.Join(dir, local.SchedulerKubeconfigFile)
		kc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
		if err != nil {
			return nil, err
		}
		s, err := scheduler.NewWithRESTConfig(cfg, kc, slog.New(slog.DiscardHandler))
		if err != nil {
			return nil, err
		}
		schedCtx, stopSched := context.WithCancel(ctx)
		schedDone := make(chan error, 1)
		go func() { schedDone <- s.Run(schedCtx) }()
		stop := func() {
			stopSched()
			<-schedDone
		}
		for !s.Ready() {
			select {
			case err := <-schedDone:
				schedDone <- err
				return nil, fmt.Errorf("scheduler stopped: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		return stop, nil
	}
	if !o.backlog {
		stop, err := startScheduler()
		if err != nil {
			return r, err
		}
		defer stop()
	}

	progress("creating %d pods from %d clients", c.pods, o.creators)
	start := time.Now()
	names := make(chan int)
	var wg sync.WaitGroup
	var createErr error
	var errOnce sync.Once
	for range o.creators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range names {
				p := benchPod(o, variant, i)
				mu.Lock()
				created[p.Name] = time.Now()
				mu.Unlock()
				if _, err := cs.CoreV1().Pods(benchNamespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					errOnce.Do(func() { createErr = err })
				}
			}
		}()
	}
	for i := range c.pods {
		names <- i
	}
	close(names)
	wg.Wait()
	createdIn := time.Since(start)
	if createErr != nil {
		return r, fmt.Errorf("creating pods: %w", createErr)
	}
	r.createRate = float64(c.pods) / createdIn.Seconds()
	if o.backlog {
		// Every pod waits; the clock starts with the scheduler.
		stop, err := startScheduler()
		if err != nil {
			return r, err
		}
		defer stop()
		start = time.Now()
	}
	progress("created in %s; waiting for the binds", createdIn.Round(time.Millisecond))
	select {
	case <-allBound:
	case <-time.After(o.timeout):
		progress("timed out after %s", o.timeout)
	case <-ctx.Done():
		return r, ctx.Err()
	}

	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	var last time.Time
	perNode := map[string]int{}
	for name, t := range bound {
		if t.After(last) {
			last = t
		}
		if c, ok := created[name]; ok {
			if c.Before(start) {
				c = start // backlog: waiting for the scheduler to start is not its latency
			}
			lat = append(lat, t.Sub(c))
		}
		perNode[nodeOf[name]]++
	}
	r.bound = len(bound)
	if r.bound > 0 {
		r.rate = float64(r.bound) / last.Sub(start).Seconds()
	}
	slices.Sort(lat)
	r.p50, r.p99 = pct(lat, 50), pct(lat, 99)
	r.usedNodes = len(perNode)
	r.minPerNode = -1
	for _, n := range perNode {
		if r.minPerNode < 0 || n < r.minPerNode {
			r.minPerNode = n
		}
		r.maxPerNode = max(r.maxPerNode, n)
	}
	r.minPerNode = max(r.minPerNode, 0)
	r.broken = "-"
	if variant == "spread" {
		r.broken = brokenRules(o, c, nodeOf)
	}
	return r, nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func nodeName(i int) string { return fmt.Sprintf("node-%04d", i) }

func zoneOf(o options, i int) string { return fmt.Sprintf("zone-%d", i%o.zones) }

// createNodes creates n Ready nodes from 20 clients: the Node, then its
// status (the apiserver ignores status on create).
func createNodes(ctx context.Context, cs kubernetes.Interface, o options, n int) error {
	idx := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				errs <- createNode(ctx, cs, o, i)
			}
		}()
	}
	for i := range n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func createNode(ctx context.Context, cs kubernetes.Interface, o options, i int) error {
	name := nodeName(i)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		hostnameLabel: name, zoneLabel: zoneOf(o, i), "kubernetes.io/os": "linux",
	}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(o.cpu), corev1.ResourceMemory: resource.MustParse(o.memory),
		corev1.ResourcePods: resource.MustParse("110"),
	}
	now := metav1.Now()
	status := corev1.NodeStatus{
		Capacity: res, Allocatable: res,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	// Node IPAM may write the pod range in between: retry on conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = status
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("node %s status: %w", name, err)
	}
	return nil
}

// renewLeases keeps the nodes' Leases fresh every 15 s from 10 clients
// (the node lifecycle controller's grace period is 40 s), updating the
// objects it holds instead of reading them again.
func renewLeases(ctx context.Context, cs kubernetes.Interface, n int) {
	leases := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	held := make([]*coordinationv1.Lease, n)
	for {
		idx := make(chan int)
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range idx {
					name := nodeName(i)
					now := metav1.NewMicroTime(time.Now())
					var l *coordinationv1.Lease
					var err error
					if held[i] == nil {
						secs := int32(40)
						l, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease},
							Spec: coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &secs, RenewTime: &now}}, metav1.CreateOptions{})
					} else {
						held[i].Spec.RenewTime = &now
						l, err = leases.Update(ctx, held[i], metav1.UpdateOptions{})
					}
					if err == nil {
						held[i] = l
					} else if ctx.Err() == nil {
						held[i] = nil
						if got, gerr := leases.Get(ctx, name, metav1.GetOptions{}); gerr == nil {
							held[i] = got
						}
						if !errors.Is(err, context.Canceled) {
							progress("lease %s: %v", name, err)
						}
					}
				}
			}()
		}
		for i := range n {
			if ctx.Err() != nil {
				break
			}
			idx <- i
		}
		close(idx)
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-time.After(15 * time.Second):
		}
	}
}

// benchPod is pod i: requests only, or (spread) one of a group of
// o.group pods spread over zones and kept apart by hostname.
func benchPod(o options, variant string, i int) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%05d", i), Namespace: benchNamespace},
		Spec: corev1.PodSpec{
			SchedulerName: benchScheduler,
			Containers: []corev1.Container{{Name: "c", Image: "busybox", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(o.podCPU), corev1.ResourceMemory: resource.MustParse(o.podMem)}}}},
		},
	}
	if variant != "spread" {
		return p
	}
	group := fmt.Sprintf("g%04d", i/o.group)
	p.Labels = map[string]string{groupLabel: group}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{groupLabel: group}}
	p.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
		MaxSkew: 1, TopologyKey: zoneLabel, WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: sel,
	}}
	p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{LabelSelector: sel, TopologyKey: hostnameLabel}},
	}}
	return p
}

// brokenRules counts the groups whose pods share a node or whose zone
// counts differ by more than one (over the pods that were bound).
func brokenRules(o options, c benchCase, nodeOf map[string]string) string {
	zoneOfNode := map[string]string{}
	for i := range c.nodes {
		zoneOfNode[nodeName(i)] = zoneOf(o, i)
	}
	type counts struct {
		nodes map[string]int
		zones map[string]int
	}
	groups := map[string]*counts{}
	for name, node := range nodeOf {
		var i int
		fmt.Sscanf(name, "pod-%d", &i)
		g := fmt.Sprintf("g%04d", i/o.group)
		if groups[g] == nil {
			groups[g] = &counts{nodes: map[string]int{}, zones: map[string]int{}}
		}
		groups[g].nodes[node]++
		groups[g].zones[zoneOfNode[node]]++
	}
	shared, skewed := 0, 0
	for _, g := range groups {
		for _, n := range g.nodes {
			if n > 1 {
				shared++
				break
			}
		}
		var zs []int
		for z := range o.zones {
			zs = append(zs, g.zones[fmt.Sprintf("zone-%d", z)])
		}
		sort.Ints(zs)
		if zs[len(zs)-1]-zs[0] > 1 {
			skewed++
		}
	}
	return fmt.Sprintf("%d/%d groups share a node, %d skewed", shared, len(groups), skewed)
}
