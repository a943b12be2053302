package v1alpha1

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ValidationError lists every problem found in a cluster.yaml, each a
// field.Error whose Detail says what is wrong, with the line it is on when
// the spec came from a file.
type ValidationError struct {
	Errors field.ErrorList
	lines  map[string]int
}

// Line is the line of the file that holds fe's field (or its nearest
// parent), 0 when unknown: a defaulted field, or a Cluster built in code.
func (e *ValidationError) Line(fe *field.Error) int { return lineOf(e.lines, fe.Field) }

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid cluster spec (%d problem", len(e.Errors))
	if len(e.Errors) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, fe := range e.Errors {
		b.WriteString("\n  - ")
		if l := e.Line(fe); l > 0 {
			fmt.Fprintf(&b, "line %d: ", l)
		}
		fmt.Fprintf(&b, "%s: %s", fe.Field, fe.Detail)
	}
	return b.String()
}

// Validate checks a defaulted Cluster built in code (no line numbers).
// It reads nothing from disk: CheckSSHFiles does, for commands that connect.
func (c *Cluster) Validate() error { return c.validate(nil) }

// problems collects field errors; each is an Invalid (or Required) error
// of its field with the message as its detail.
type problems struct {
	errs  field.ErrorList
	lines map[string]int
}

func (p *problems) add(f, format string, args ...any) {
	p.errs = append(p.errs, &field.Error{Type: field.ErrorTypeInvalid, Field: f, Detail: fmt.Sprintf(format, args...)})
}

// result sorts the problems by line (those with none last) into a
// *ValidationError, or returns nil.
func (p *problems) result() error {
	if len(p.errs) == 0 {
		return nil
	}
	errs := p.errs
	sort.SliceStable(errs, func(i, j int) bool {
		li, lj := lineOf(p.lines, errs[i].Field), lineOf(p.lines, errs[j].Field)
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
	return &ValidationError{Errors: errs, lines: p.lines}
}

// CheckSSHFiles checks what connecting needs on this machine: every
// identity file the hosts use exists. A missing one is reported once, at
// the first field that names it. Commands that never connect (pki init,
// kubeconfig, cert status --local, validate --offline) skip it.
func (c *Cluster) CheckSSHFiles() error {
	p := &problems{lines: c.lines}
	seen := map[string]bool{}
	for i, h := range c.Spec.Hosts {
		eff := c.HostSSH(h)
		if eff.IdentityFile == "" || seen[eff.IdentityFile] {
			continue
		}
		seen[eff.IdentityFile] = true
		if _, err := os.Stat(eff.IdentityFile); err != nil {
			f := "spec.ssh.identityFile"
			if h.SSH != nil && h.SSH.IdentityFile != "" {
				f = fmt.Sprintf("spec.hosts[%d].ssh.identityFile", i)
			}
			p.add(f, "identity file %s: %v", eff.IdentityFile, errorsCause(err))
		}
	}
	return p.result()
}

func (c *Cluster) validate(lines map[string]int) error {
	p := &problems{lines: lines}
	add := p.add

	if c.APIVersion != APIVersion {
		add("apiVersion", "must be %q, not %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		add("kind", "must be %q, not %q", Kind, c.Kind)
	}
	if c.Metadata.Name == "" {
		add("metadata.name", "is required")
	} else if !dns1123Label.MatchString(c.Metadata.Name) || len(c.Metadata.Name) > 63 {
		add("metadata.name", "%q is not a valid name (lower-case letters, digits and '-', at most 63)", c.Metadata.Name)
	}

	s := &c.Spec
	validateSSH(&s.SSH, "spec.ssh", add)

	// Networks first: host addresses are checked against them.
	pod := parseCIDR(s.Network.PodCIDR, "spec.network.podCIDR", add)
	svc := parseCIDR(s.Network.ServiceCIDR, "spec.network.serviceCIDR", add)
	if pod.IsValid() && svc.IsValid() && pod.Overlaps(svc) {
		add("spec.network.serviceCIDR", "%s overlaps spec.network.podCIDR %s", svc, pod)
	}
	if d := s.Network.ClusterDomain; !validDomain(d) {
		add("spec.network.clusterDomain", "%q is not a valid DNS domain", d)
	}

	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	masters, lbHosts := 0, 0
	if len(s.Hosts) == 0 {
		add("spec.hosts", "at least one host is required")
	}
	for i, h := range s.Hosts {
		f := fmt.Sprintf("spec.hosts[%d]", i)
		switch {
		case h.Name == "":
			add(f+".name", "is required")
		case !dns1123Label.MatchString(h.Name) || len(h.Name) > 63:
			add(f+".name", "%q is not a valid host name (lower-case letters, digits and '-', at most 63)", h.Name)
		default:
			if j, dup := names[h.Name]; dup {
				add(f+".name", "duplicate host name %q (also spec.hosts[%d])", h.Name, j)
			} else {
				names[h.Name] = i
			}
		}
		if a, err := netip.ParseAddr(h.Address); err != nil {
			add(f+".address", "%q is not an IP address", h.Address)
		} else {
			if j, dup := addrs[a]; dup {
				add(f+".address", "duplicate address %s (also spec.hosts[%d])", a, j)
			} else {
				addrs[a] = i
			}
			if pod.IsValid() && pod.Contains(a) {
				add(f+".address", "%s lies inside spec.network.podCIDR %s", a, pod)
			}
			if svc.IsValid() && svc.Contains(a) {
				add(f+".address", "%s lies inside spec.network.serviceCIDR %s", a, svc)
			}
		}
		switch h.Role {
		case RoleMaster:
			masters++
		case RoleWorker:
		case RoleLoadBalancer:
			lbHosts++
		case "":
			add(f+".role", "is required (one of master, worker, loadbalancer)")
		default:
			add(f+".role", "unknown role %q (one of master, worker, loadbalancer)", h.Role)
		}
		if h.SSH != nil {
			validateSSH(h.SSH, f+".ssh", add)
		}
	}
	if len(s.Hosts) > 0 && masters == 0 {
		add("spec.hosts", "no host has role master; at least one is required")
	}
	if masters > 0 && masters%2 == 0 && !s.AllowEvenMasters {
		add("spec.hosts", "%d masters: etcd needs a majority, so an even number tolerates no more failures than one fewer; use an odd number or set spec.allowEvenMasters: true", masters)
	}

	lb := s.LoadBalancer
	if lb.Address == "" {
		if masters > 1 {
			add("spec.loadBalancer", "is required with more than one master (%d): clients need one address for every apiserver", masters)
		}
		if lb.Host != "" {
			add("spec.loadBalancer.address", "is required when spec.loadBalancer.host is set")
		}
	} else {
		lbAddr, err := netip.ParseAddr(lb.Address)
		if err != nil {
			add("spec.loadBalancer.address", "%q is not an IP address", lb.Address)
		}
		if lb.Port < 1 || lb.Port > 65535 {
			add("spec.loadBalancer.port", "%d is not a TCP port (1-65535)", lb.Port)
		}
		if lb.Host != "" {
			h := c.Host(lb.Host)
			switch {
			case h == nil:
				add("spec.loadBalancer.host", "names no host in spec.hosts: %q", lb.Host)
			case h.Role != RoleLoadBalancer:
				add("spec.loadBalancer.host", "host %q has role %q, not loadbalancer", lb.Host, h.Role)
			case err == nil && h.Address != lbAddr.String() && h.Address != lb.Address:
				add("spec.loadBalancer.address", "%s differs from the address of host %q (%s)", lb.Address, lb.Host, h.Address)
			}
		}
	}
	if lbHosts > 1 {
		add("spec.hosts", "%d hosts have role loadbalancer; at most one is supported", lbHosts)
	}
	if lbHosts == 1 && lb.Host == "" {
		add("spec.loadBalancer.host", "must name the host with role loadbalancer")
	}

	caV := parseValidity(s.PKI.CAValidity, "spec.pki.caValidity", add)
	certV := parseValidity(s.PKI.CertValidity, "spec.pki.certValidity", add)
	if caV > 0 && certV > caV {
		add("spec.pki.certValidity", "%s is longer than spec.pki.caValidity %s", s.PKI.CertValidity, s.PKI.CAValidity)
	}

	return p.result()
}

type addFunc func(field, format string, args ...any)

func validateSSH(s *SSH, field string, add addFunc) {
	if s.Port != 0 && (s.Port < 1 || s.Port > 65535) {
		add(field+".port", "%d is not a TCP port (1-65535)", s.Port)
	}
}

func parseCIDR(v, field string, add addFunc) netip.Prefix {
	if v == "" {
		add(field, "is required")
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		add(field, "%q is not a CIDR", v)
		return netip.Prefix{}
	}
	if p.Masked() != p {
		add(field, "%s has host bits set; did you mean %s?", v, p.Masked())
		return p.Masked()
	}
	return p
}

func parseValidity(v, field string, add addFunc) time.Duration {
	d, err := time.ParseDuration(v)
	if err != nil {
		add(field, "%q is not a duration (for example 8760h)", v)
		return 0
	}
	if d < time.Hour {
		add(field, "%s is too short (at least 1h)", v)
		return 0
	}
	return d
}

func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if !dns1123Label.MatchString(l) || len(l) > 63 {
			return false
		}
	}
	return true
}

func errorsCause(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
