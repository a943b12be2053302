package installer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/util/cert"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/pki"
)

// StatusOptions configure `kforge status`.
type StatusOptions struct {
	Cluster *v1alpha1.Cluster
	Out     io.Writer
	// Warn flags certificates that expire within it (30 days when 0).
	Warn           time.Duration
	PromptPassword func(string) (string, error)
	Log            *slog.Logger
}

// StatusResult is what status found; Problems is empty when all is well.
type StatusResult struct {
	Problems []string
}

// Healthy reports whether nothing is wrong.
func (r *StatusResult) Healthy() bool { return len(r.Problems) == 0 }

// Status prints the cluster at a glance: etcd members, apiservers, the
// load balancer's backends, nodes and certificate expiry per host. It
// reads only. etcd and the apiservers are asked from this machine with the
// local PKI's certificates (through the hosts' SSH connections when they
// sit behind a bastion: Dialer); the LB metrics (loopback on the lb host)
// and the deployed certificates are read over SSH.
func Status(ctx context.Context, o StatusOptions) (*StatusResult, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Warn == 0 {
		o.Warn = 30 * 24 * time.Hour
	}
	c := o.Cluster
	inv, err := pki.NewInventory(PKISpec(c), "")
	if err != nil {
		return nil, err
	}
	res := &StatusResult{}
	var mu sync.Mutex
	problem := func(format string, a ...any) {
		mu.Lock()
		res.Problems = append(res.Problems, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	hosts := SSHHosts(c, false, o.PromptPassword, o.Log)
	defer func() {
		for _, h := range hosts {
			_ = h.Close()
		}
	}()
	reach := make([]error, len(hosts))
	_ = ParallelEach(ctx, DefaultParallel, indexes(len(hosts)), func(ctx context.Context, i int) error {
		reach[i] = hosts[i].Connect(ctx)
		return nil
	})
	pr, err := NewNetProber(c, inv, NewDialer(c, hosts).DialContext)
	if err != nil {
		return nil, fmt.Errorf("reading the local PKI (has kforge up run?): %w", err)
	}

	w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	section := func(title string) { fmt.Fprintf(w, "\n%s\n", title) }

	// etcd.
	masters := c.Masters()
	section("ETCD MEMBER\tENDPOINT\tHEALTH\tLEADER\tDB SIZE\tVERSION")
	var addrs []string
	for _, m := range masters {
		addrs = append(addrs, m.Address)
	}
	statuses := make([]*EtcdStatus, len(masters))
	errs := make([]error, len(masters))
	_ = ParallelEach(ctx, DefaultParallel, indexes(len(masters)), func(ctx context.Context, i int) error {
		statuses[i], errs[i] = pr.EtcdMember(ctx, masters[i].Address)
		return nil
	})
	for i, m := range masters {
		st, err := statuses[i], errs[i]
		if err != nil {
			problem("etcd %s: %v", m.Name, err)
			fmt.Fprintf(w, "%s\t%s\t✗ %s\t\t\t\n", m.Name, EtcdEndpoint(m.Address), oneLine(err.Error()))
			continue
		}
		leader := "no"
		if st.Leader == st.MemberID {
			leader = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t✓ healthy\t%s\t%s\t%s\n", m.Name, st.Endpoint, leader, humanBytes(st.DBSize), st.Version)
	}
	if members, err := pr.EtcdMembers(ctx, addrs); err != nil {
		problem("etcd member list: %v", err)
	} else if len(members) != len(masters) {
		problem("etcd has %d members; the spec has %d masters", len(members), len(masters))
	}

	// apiservers.
	section("APISERVER\tURL\tREADY")
	type target struct{ name, url string }
	targets := []target{}
	for _, m := range masters {
		targets = append(targets, target{m.Name, "https://" + v1alpha1.HostPort(m.Address, 6443)})
	}
	targets = append(targets, target{"(load balancer)", c.APIServerURL()})
	ready := map[string]bool{} // master name → its apiserver is ready
	for _, t := range targets {
		if err := pr.APIServer(ctx, t.url); err != nil {
			problem("apiserver %s: %v", t.name, err)
			fmt.Fprintf(w, "%s\t%s\t✗ %s\n", t.name, t.url, oneLine(err.Error()))
		} else {
			ready[t.name] = true
			fmt.Fprintf(w, "%s\t%s\t✓ ready\n", t.name, t.url)
		}
	}

	// The "kubernetes" Service's Endpoints: what in-cluster clients use.
	section("KUBERNETES ENDPOINT\tMASTER\tSTATE")
	if listed, err := kubernetesEndpoints(ctx, pr, inv, c.APIServerURL()); err != nil {
		problem("the kubernetes endpoints: %v", err)
		fmt.Fprintf(w, "✗ %s\t\t\n", oneLine(err.Error()))
	} else {
		byAddr := map[string]string{}
		for _, m := range masters {
			byAddr[m.Address] = m.Name
		}
		for _, ip := range listed {
			if name, ok := byAddr[ip]; ok {
				fmt.Fprintf(w, "%s\t%s\t✓ listed\n", ip, name)
				delete(byAddr, ip)
				continue
			}
			problem("the kubernetes endpoints list %s, which is no master", ip)
			fmt.Fprintf(w, "%s\t\t✗ no such master\n", ip)
		}
		for _, m := range masters {
			if _, missing := byAddr[m.Address]; !missing {
				continue
			}
			if ready[m.Name] {
				problem("the kubernetes endpoints lack %s, whose apiserver is ready", m.Name)
				fmt.Fprintf(w, "%s\t%s\t✗ ready but not listed\n", m.Address, m.Name)
			} else {
				fmt.Fprintf(w, "%s\t%s\t– not listed (not ready)\n", m.Address, m.Name)
			}
		}
	}

	// Load balancer backends.
	if lbName := c.Spec.LoadBalancer.Host; lbName != "" {
		section("LB BACKEND\tUP")
		var lbh Host
		var lerr error
		for i, h := range hosts {
			if h.Name() == lbName {
				lbh, lerr = h, reach[i]
			}
		}
		var up map[string]bool
		if lbh != nil && lerr == nil {
			up, lerr = lbBackends(ctx, lbh)
		}
		if lerr != nil {
			problem("lb %s: %v", lbName, lerr)
			fmt.Fprintf(w, "(%s)\t✗ %s\n", lbName, oneLine(lerr.Error()))
		}
		for _, m := range masters {
			b := v1alpha1.HostPort(m.Address, 6443)
			switch {
			case lerr != nil:
			case up[b]:
				fmt.Fprintf(w, "%s (%s)\t✓ up\n", b, m.Name)
			default:
				problem("lb backend %s is down", b)
				fmt.Fprintf(w, "%s (%s)\t✗ down\n", b, m.Name)
			}
		}
	} else {
		section("LB\n(external: " + c.APIServerURL() + ")")
	}

	// Leaders of the leader-elected roles.
	section("ROLE\tLEADER\tRENEWED")
	for _, r := range slices.Backward(Roles) {
		if r.LeaderLease == "" {
			continue
		}
		holder, age, err := leader(ctx, pr, inv, c.APIServerURL(), r.LeaderLease)
		if err != nil {
			problem("%s: %v", r.LeaderLease, err)
			fmt.Fprintf(w, "%s\t✗ %s\t\n", r.Name, oneLine(err.Error()))
			continue
		}
		fmt.Fprintf(w, "%s\t✓ %s\t%s ago\n", r.Name, holder, age.Round(time.Second))
	}

	// Nodes.
	section("NODES\tSTATUS\tPODS\tVERSION")
	if nodes, err := nodeSummaries(ctx, pr, inv, c.APIServerURL()); err != nil {
		problem("nodes: %v", err)
		fmt.Fprintf(w, "✗ %s\n", oneLine(err.Error()))
	} else if len(nodes) == 0 {
		fmt.Fprintf(w, "none registered yet\n")
	} else {
		for _, n := range nodes {
			mark := "✓"
			if !n.Ready {
				mark = "✗"
				problem("node %s: %s", n.Name, n.Status)
			}
			fmt.Fprintf(w, "%s\t%s %s\t%d\t%s\n", n.Name, mark, n.Status, n.Pods, n.Version)
		}
	}

	// The last `kforge up`, from the run journal beside cluster.yaml.
	if c.Path != "" {
		section("LAST UP\tSTARTED\tRESULT")
		recs, err := ReadJournal(JournalPath(c.Path))
		switch last := LastRun(recs); {
		case err != nil:
			fmt.Fprintf(w, "✗ %s\t\t\n", oneLine(err.Error()))
		case last == nil:
			fmt.Fprintf(w, "none recorded\t\t\n")
		default:
			result := fmt.Sprintf("✓ done in %s", formatDuration(time.Duration(last.DurationMS)*time.Millisecond))
			switch {
			case !last.Ended:
				result = "✗ did not finish (interrupted); run kforge up again"
			case !last.OK:
				result = "✗ failed: " + oneLine(last.Error)
			}
			if len(last.Failed) > 0 {
				result += " (failed: " + strings.Join(last.Failed, ", ") + ")"
			}
			fmt.Fprintf(w, "%s (%s)\t%s\t%s\n", last.Run, last.Version, last.Start.Local().Format(time.DateTime), result)
		}
	}

	// Certificates as deployed.
	section("HOST\tCERTIFICATE\tNOT AFTER\tDAYS LEFT")
	now := time.Now()
	type certRow struct{ host, file, notAfter, left string }
	rows := make([][]certRow, len(hosts))
	_ = ParallelEach(ctx, DefaultParallel, indexes(len(hosts)), func(ctx context.Context, i int) error {
		h := hosts[i]
		if reach[i] != nil {
			problem("host %s unreachable: %v", h.Name(), reach[i])
			rows[i] = []certRow{{h.Name(), "✗ unreachable", "", ""}}
			return nil
		}
		var paths []string
		for _, f := range inv.FilesFor(h.Name()) {
			if f.Kind == pki.KindCert {
				paths = append(paths, pkiRemote(f))
			}
		}
		certs, err := readRemoteCerts(ctx, h, paths)
		if err != nil {
			problem("host %s certificates: %v", h.Name(), err)
			rows[i] = []certRow{{h.Name(), "✗ " + oneLine(err.Error()), "", ""}}
			return nil
		}
		for _, p := range paths {
			crt, ok := certs[p]
			if !ok {
				problem("host %s: %s is missing", h.Name(), p)
				rows[i] = append(rows[i], certRow{h.Name(), p, "✗ missing", ""})
				continue
			}
			left := crt.NotAfter.Sub(now)
			mark := ""
			if left < o.Warn {
				mark = " ✗"
				problem("host %s: %s expires %s", h.Name(), p, crt.NotAfter.Format(time.DateOnly))
			}
			rows[i] = append(rows[i], certRow{h.Name(), p, crt.NotAfter.UTC().Format(time.DateOnly), strconv.Itoa(int(left.Hours()/24)) + mark})
		}
		return nil
	})
	for _, rs := range rows {
		for _, r := range rs {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.host, r.file, r.notAfter, r.left)
		}
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if res.Healthy() {
		fmt.Fprintln(o.Out, "\nAll healthy.")
	} else {
		sort.Strings(res.Problems)
		fmt.Fprintf(o.Out, "\n%d problem(s):\n", len(res.Problems))
		for _, p := range res.Problems {
			fmt.Fprintf(o.Out, "  - %s\n", p)
		}
	}
	return res, nil
}

// lbBackends reads which apiservers the lb counts as up from its metrics
// (kforge_lb_backend_up, one series per backend) on the lb host's loopback.
func lbBackends(ctx context.Context, h Host) (map[string]bool, error) {
	body, err := loopbackGet(ctx, h, LBMetricsAddress, "/metrics")
	if err != nil {
		return nil, fmt.Errorf("reading the lb metrics: %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("reading the lb metrics: %w", err)
	}
	m := map[string]bool{}
	if f := fams["kforge_lb_backend_up"]; f != nil {
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetName() == "backend" {
					// A gauge, as the lb declares it; untyped without a TYPE line.
					m[l.GetValue()] = metric.GetGauge().GetValue() == 1 || metric.GetUntyped().GetValue() == 1
				}
			}
		}
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("the lb metrics list no backends")
	}
	return m, nil
}

// readRemoteCerts reads certificate files (public: never keys) over SSH.
func readRemoteCerts(ctx context.Context, h Host, paths []string) (map[string]*x509.Certificate, error) {
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "[ -f %s ] && echo '==> %s' && cat %s; ", ssh.ShellQuote(p), p, ssh.ShellQuote(p))
	}
	b.WriteString("true")
	out, err := h.Run(ctx, b.String())
	if err != nil {
		return nil, err
	}
	certs := map[string]*x509.Certificate{}
	for _, part := range strings.Split(out, "==> ")[1:] {
		name, body, _ := strings.Cut(part, "\n")
		blk, _ := pem.Decode([]byte(body))
		if blk == nil {
			continue
		}
		crt, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		certs[strings.TrimSpace(name)] = crt
	}
	return certs, nil
}

// apiGet GETs path through the API with the admin certificate and decodes
// the JSON answer into into.
func apiGet(ctx context.Context, pr *NetProber, inv *pki.Inventory, base, path string, into any) error {
	ca, err := cert.NewPool(inv.Path(inv.Cert(pki.ClusterCA).CertFile))
	if err != nil {
		return err
	}
	admin := inv.Cert("admin")
	pair, err := tls.LoadX509KeyPair(inv.Path(admin.CertFile), inv.Path(admin.KeyFile))
	if err != nil {
		return err
	}
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
		DialContext:     pr.dial,
	}}
	defer cl.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

// kubernetesEndpoints reads the addresses of default/kubernetes's
// Endpoints through the API with the admin certificate.
func kubernetesEndpoints(ctx context.Context, pr *NetProber, inv *pki.Inventory, base string) ([]string, error) {
	var ep struct {
		Subsets []struct {
			Addresses []struct {
				IP string `json:"ip"`
			} `json:"addresses"`
		} `json:"subsets"`
	}
	if err := apiGet(ctx, pr, inv, base, "/api/v1/namespaces/default/endpoints/kubernetes", &ep); err != nil {
		return nil, err
	}
	var out []string
	for _, sub := range ep.Subsets {
		for _, a := range sub.Addresses {
			out = append(out, a.IP)
		}
	}
	return out, nil
}

// nodeSummary is one Node as status shows it.
type nodeSummary struct {
	Name    string
	Ready   bool
	Status  string // "Ready", or what is wrong: NotReady (reason), pressure, cordoned
	Pods    int    // pods bound to it that have not finished
	Version string
}

// nodeSummaries reads the Nodes and the pods through the API with the
// admin certificate: each Node's Ready condition (with its reason when not
// True), the pressure conditions that are True, whether it is cordoned,
// and how many unfinished pods it has.
func nodeSummaries(ctx context.Context, pr *NetProber, inv *pki.Inventory, base string) ([]nodeSummary, error) {
	var nodes corev1.NodeList
	if err := apiGet(ctx, pr, inv, base, "/api/v1/nodes", &nodes); err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := apiGet(ctx, pr, inv, base, "/api/v1/pods", &pods); err != nil {
		return nil, err
	}
	perNode := map[string]int{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			perNode[p.Spec.NodeName]++
		}
	}
	var out []nodeSummary
	for _, n := range nodes.Items {
		s := nodeSummary{Name: n.Name, Pods: perNode[n.Name], Version: n.Status.NodeInfo.KubeletVersion}
		var notes []string
		ready := false
		for _, c := range n.Status.Conditions {
			switch {
			case c.Type == corev1.NodeReady:
				ready = c.Status == corev1.ConditionTrue
				if !ready {
					why := string(c.Status)
					if c.Reason != "" {
						why = c.Reason
					}
					notes = append(notes, "NotReady ("+why+")")
				}
			case c.Status == corev1.ConditionTrue: // MemoryPressure, DiskPressure, PIDPressure, NetworkUnavailable
				notes = append(notes, string(c.Type))
			}
		}
		if len(n.Status.Conditions) == 0 {
			notes = append(notes, "NotReady (no status yet)")
		}
		if n.Spec.Unschedulable {
			notes = append(notes, "SchedulingDisabled")
		}
		s.Ready = ready
		s.Status = "Ready"
		if len(notes) > 0 {
			s.Status = strings.Join(notes, ", ")
			if ready {
				s.Status = "Ready, " + s.Status
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// leader reads a leader-election Lease in kube-system: who holds it and
// how long ago it was renewed.
func leader(ctx context.Context, pr *NetProber, inv *pki.Inventory, base, name string) (holder string, age time.Duration, err error) {
	var lease struct {
		Spec struct {
			HolderIdentity       string    `json:"holderIdentity"`
			LeaseDurationSeconds int       `json:"leaseDurationSeconds"`
			RenewTime            time.Time `json:"renewTime"`
		} `json:"spec"`
	}
	if err := apiGet(ctx, pr, inv, base, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"+name, &lease); err != nil {
		return "", 0, err
	}
	age = time.Since(lease.Spec.RenewTime)
	if lease.Spec.HolderIdentity == "" {
		return "", age, fmt.Errorf("no holder")
	}
	if d := time.Duration(lease.Spec.LeaseDurationSeconds) * time.Second; d > 0 && age > 2*d {
		return lease.Spec.HolderIdentity, age, fmt.Errorf("held by %s but not renewed for %s", lease.Spec.HolderIdentity, age.Round(time.Second))
	}
	return lease.Spec.HolderIdentity, age, nil
}
