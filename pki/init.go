package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Action is what Init did with one certificate or file.
type Action string

// Actions, as reported.
const (
	Created  Action = "created"  // did not exist
	Kept     Action = "kept"     // exists and matches the spec: untouched
	Reissued Action = "reissued" // a leaf that no longer matched the spec (see Reason)
	Updated  Action = "updated"  // a copy or kubeconfig rewritten to match its source
)

// Item is one line of a Report.
type Item struct {
	// ID is a certificate's ID, "sa" for the service-account key pair,
	// or the path (relative to the PKI directory) of a copy or kubeconfig.
	ID     string `json:"id"`
	Kind   string `json:"kind"` // "ca", "cert", "key-pair", "file"
	Action Action `json:"action"`
	Reason string `json:"reason,omitempty"`
}

// Report says what Init did, item by item, in inventory order.
type Report struct {
	Dir   string `json:"dir"`
	Items []Item `json:"items"`
}

// Count returns how many items had this action.
func (r *Report) Count(a Action) int {
	n := 0
	for _, it := range r.Items {
		if it.Action == a {
			n++
		}
	}
	return n
}

// Changed reports whether Init wrote anything.
func (r *Report) Changed() bool { return r.Count(Kept) != len(r.Items) }

// WriteSummary writes a short summary: counts per action, then every
// reissued certificate with its reason.
func (r *Report) WriteSummary(w io.Writer) error {
	var certs, files [4]int // created, kept, reissued, updated
	idx := map[Action]int{Created: 0, Kept: 1, Reissued: 2, Updated: 3}
	for _, it := range r.Items {
		if it.Kind == "file" {
			files[idx[it.Action]]++
		} else {
			certs[idx[it.Action]]++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "PKI in %s\n", r.Dir)
	fmt.Fprintf(&b, "  certificates and keys: %d created, %d kept, %d reissued\n", certs[0], certs[1], certs[2])
	fmt.Fprintf(&b, "  kubeconfigs and host copies: %d created, %d updated, %d unchanged\n", files[0], files[3], files[1])
	for _, it := range r.Items {
		if it.Action == Reissued {
			fmt.Fprintf(&b, "  reissued %s: %s\n", it.ID, it.Reason)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// InitOptions tune Init.
type InitOptions struct {
	// Progress, when set, gets one line per item as Init goes.
	Progress io.Writer
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Init makes the PKI directory match the inventory.
//
// It reads and checks everything first and changes nothing when the
// directory is broken: a CA certificate without its key (or a key without
// its certificate), a key that does not match its certificate, an expired
// CA, unparsable PEM, a private key readable by others, or leaves left over
// from a CA that is gone are errors naming the file. Then it never replaces
// an existing CA or service-account key; it keeps every leaf that chains to
// its current CA, has not expired, and whose subject, SANs, key usages and
// key type match the spec; it issues what is missing and reissues what no
// longer matches. Kubeconfigs and the copies in each host's folder are
// rewritten only when their content would change. Files are written
// atomically: keys 0600, folders 0700.
func Init(ctx context.Context, inv *Inventory, opts InitOptions) (*Report, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}

	cur, err := readAll(inv, now())
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	for _, d := range []string{"", caDir, clientsDir, kubeconfigDir, hostsDir} {
		if err := ensureDir(inv.Path(d)); err != nil {
			return nil, err
		}
	}
	for _, h := range inv.Hosts {
		if err := ensureDir(inv.Path(hostsDir + "/" + h)); err != nil {
			return nil, err
		}
	}

	rep := &Report{Dir: inv.Dir}
	report := func(it Item) {
		rep.Items = append(rep.Items, it)
		line := fmt.Sprintf("%-8s %s", it.Action, it.ID)
		if it.Reason != "" {
			line += ": " + it.Reason
		}
		fmt.Fprintln(progress, line)
	}

	// CAs first: leaves need them.
	final := map[string]*pair{}
	for i := range inv.Certs {
		spec := &inv.Certs[i]
		if !spec.IsCA {
			continue
		}
		if p := cur.pairs[spec.ID()]; p != nil {
			final[spec.ID()] = p
			report(Item{ID: spec.ID(), Kind: "ca", Action: Kept})
			continue
		}
		p, err := newCA(spec)
		if err != nil {
			return rep, err
		}
		if err := writePair(inv, spec, p); err != nil {
			return rep, err
		}
		final[spec.ID()] = p
		report(Item{ID: spec.ID(), Kind: "ca", Action: Created})
	}

	if cur.saKey == nil {
		key, pub, err := newServiceAccountKey()
		if err != nil {
			return rep, err
		}
		if err := writeFile(inv.Path(inv.ServiceAccountKey), key, secretMode); err != nil {
			return rep, err
		}
		if err := writeFile(inv.Path(inv.ServiceAccountPub), pub, publicMode); err != nil {
			return rep, err
		}
		cur.saKey, cur.saPub = key, pub
		report(Item{ID: "sa", Kind: "key-pair", Action: Created})
	} else {
		report(Item{ID: "sa", Kind: "key-pair", Action: Kept})
	}

	for i := range inv.Certs {
		spec := &inv.Certs[i]
		if spec.IsCA {
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		ca := final[spec.CA]
		action, reason := Created, ""
		if p := cur.pairs[spec.ID()]; p != nil {
			reason = mismatch(spec, p.cert, ca.cert, now())
			if reason == "" {
				final[spec.ID()] = p
				report(Item{ID: spec.ID(), Kind: "cert", Action: Kept})
				continue
			}
			action = Reissued
		}
		p, err := issue(spec, ca)
		if err != nil {
			return rep, err
		}
		if err := writePair(inv, spec, p); err != nil {
			return rep, err
		}
		final[spec.ID()] = p
		report(Item{ID: spec.ID(), Kind: "cert", Action: action, Reason: reason})
	}

	// Derived files: kubeconfigs, then each host's copies. Their content
	// is a function of the files above, so comparing bytes is enough.
	content := map[string][]byte{
		inv.ServiceAccountKey: cur.saKey,
		inv.ServiceAccountPub: cur.saPub,
	}
	for id, p := range final {
		if spec := inv.Cert(id); spec != nil && spec.IsCA {
			content[spec.CertFile] = p.certPEM
		}
	}
	sync := func(rel string, want []byte, mode os.FileMode) error {
		content[rel] = want
		path := inv.Path(rel)
		have, err := readOptional(path)
		if err != nil {
			return err
		}
		if have != nil && bytes.Equal(have, want) {
			if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == mode {
				report(Item{ID: rel, Kind: "file", Action: Kept})
				return nil
			}
		}
		if err := writeFile(path, want, mode); err != nil {
			return err
		}
		a := Updated
		if have == nil {
			a = Created
		}
		report(Item{ID: rel, Kind: "file", Action: a})
		return nil
	}
	for _, kc := range inv.Kubeconfigs {
		data, err := buildKubeconfig(inv, &kc, final[ClusterCA].certPEM, final[kc.Cert])
		if err != nil {
			return rep, err
		}
		if err := sync(kc.File, data, secretMode); err != nil {
			return rep, err
		}
	}
	for _, h := range inv.Hosts {
		for _, f := range inv.HostFiles[h] {
			if f.Source == "" {
				continue
			}
			mode := publicMode
			if f.Secret {
				mode = secretMode
			}
			want, ok := content[f.Source]
			if !ok {
				return rep, fmt.Errorf("internal error: %s copies %s, which was not produced", f.Path, f.Source)
			}
			if err := sync(f.Path, want, mode); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

func writePair(inv *Inventory, spec *Cert, p *pair) error {
	// Key first: a crash in between leaves a mismatched pair, which the
	// next run reports instead of trusting.
	if err := writeFile(inv.Path(spec.KeyFile), p.keyPEM, secretMode); err != nil {
		return err
	}
	return writeFile(inv.Path(spec.CertFile), p.certPEM, publicMode)
}

// current is what the PKI directory holds now, already checked.
type current struct {
	pairs        map[string]*pair // by cert ID; absent when not issued yet
	saKey, saPub []byte           // nil when not made yet
}

// readAll reads and checks every file Init would keep, and returns every
// problem at once.
func readAll(inv *Inventory, now time.Time) (*current, error) {
	cur := &current{pairs: map[string]*pair{}}
	var errs []error
	for i := range inv.Certs {
		spec := &inv.Certs[i]
		certPath, keyPath := inv.Path(spec.CertFile), inv.Path(spec.KeyFile)
		p, err := loadPair(certPath, keyPath)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if p == nil {
			continue
		}
		if spec.IsCA {
			switch {
			case !p.cert.IsCA || p.cert.KeyUsage&x509.KeyUsageCertSign == 0:
				errs = append(errs, fileErr(certPath, "is not a CA certificate"))
				continue
			case now.After(p.cert.NotAfter):
				errs = append(errs, fileErr(certPath, "the CA expired on %s; kforge never replaces a CA by itself, since every certificate it signed would stop working: start a new PKI in an empty directory (pki init --dir) and redeploy", p.cert.NotAfter.UTC().Format(time.RFC3339)))
				continue
			}
		}
		cur.pairs[spec.ID()] = p
	}

	// A CA that is gone while what it signed is still here: issuing a new
	// CA would silently orphan every deployed certificate.
	for i := range inv.Certs {
		ca := &inv.Certs[i]
		if !ca.IsCA || cur.pairs[ca.ID()] != nil || exists(inv.Path(ca.CertFile)) || exists(inv.Path(ca.KeyFile)) {
			continue
		}
		var left []string
		for j := range inv.Certs {
			leaf := &inv.Certs[j]
			if leaf.CA == ca.Name && (exists(inv.Path(leaf.CertFile)) || exists(inv.Path(leaf.KeyFile))) {
				left = append(left, leaf.CertFile)
			}
		}
		for _, h := range inv.Hosts {
			for _, f := range inv.HostFiles[h] {
				if f.Source == ca.CertFile && exists(inv.Path(f.Path)) {
					left = append(left, f.Path)
				}
			}
		}
		if len(left) > 0 {
			errs = append(errs, fileErr(inv.Path(ca.CertFile), "the %s is missing but %d files issued under it remain (%s): restore %s and %s, or start over in an empty directory",
				ca.Name, len(left), strings.Join(firstN(left, 3), ", "), ca.CertFile, ca.KeyFile))
		}
	}

	// The service-account key pair.
	keyPath, pubPath := inv.Path(inv.ServiceAccountKey), inv.Path(inv.ServiceAccountPub)
	key, kerr := readOptional(keyPath)
	pub, perr := readOptional(pubPath)
	switch {
	case kerr != nil:
		errs = append(errs, kerr)
	case perr != nil:
		errs = append(errs, perr)
	case key == nil && pub == nil:
		for _, h := range inv.Hosts {
			for _, f := range inv.HostFiles[h] {
				if f.Source == inv.ServiceAccountKey && exists(inv.Path(f.Path)) {
					errs = append(errs, fileErr(keyPath, "the service-account key is missing but its copy %s remains: tokens signed with it would stop working; restore %s", f.Path, inv.ServiceAccountKey))
				}
			}
		}
	case pub == nil:
		errs = append(errs, fileErr(keyPath, "the service-account key exists but its public key %s does not; restore it, or remove both", pubPath))
	case key == nil:
		errs = append(errs, fileErr(pubPath, "the service-account public key exists but its private key %s does not; restore it, or remove both", keyPath))
	default:
		k, err := parseKeyPEM(key)
		if err != nil {
			errs = append(errs, &FileError{Path: keyPath, Err: err})
			break
		}
		p, err := parsePublicKeyPEM(pub)
		if err != nil {
			errs = append(errs, &FileError{Path: pubPath, Err: err})
			break
		}
		if !publicKeysEqual(p, k.Public()) {
			errs = append(errs, fileErr(pubPath, "does not match the service-account key %s", keyPath))
			break
		}
		if err := checkSecretMode(keyPath); err != nil {
			errs = append(errs, err)
			break
		}
		cur.saKey, cur.saPub = key, pub
	}

	if len(errs) > 0 {
		return nil, &BrokenError{Dir: inv.Dir, Errs: fileProblems(inv.Dir, errs)}
	}
	return cur, nil
}

// fileProblems turns readAll's errors into a field.ErrorList whose
// fields are the files' paths.
func fileProblems(dir string, errs []error) field.ErrorList {
	out := make(field.ErrorList, 0, len(errs))
	for _, err := range errs {
		if fe := (*FileError)(nil); errors.As(err, &fe) {
			out = append(out, field.Invalid(field.NewPath(fe.Path), field.OmitValueType{}, fe.Err.Error()))
		} else {
			out = append(out, field.Invalid(field.NewPath(dir), field.OmitValueType{}, err.Error()))
		}
	}
	return out
}

// BrokenError lists every problem found in a PKI directory, each under
// the path of its file. Init changes nothing when it returns one.
type BrokenError struct {
	Dir  string
	Errs field.ErrorList
}

func (e *BrokenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the PKI directory %s has %d problem", e.Dir, len(e.Errs))
	if len(e.Errs) != 1 {
		b.WriteString("s")
	}
	b.WriteString(" (nothing was changed):")
	for _, fe := range e.Errs {
		b.WriteString("\n  - ")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Unwrap returns the problems, so errors.As finds a *field.Error.
func (e *BrokenError) Unwrap() []error {
	out := make([]error, len(e.Errs))
	for i, fe := range e.Errs {
		out[i] = fe
	}
	return out
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(slices.Clone(s[:n]), "...")
	}
	return s
}

// mismatch says why an existing leaf no longer fits its spec, or "".
// Validity is not compared: a changed spec.pki.certValidity applies to the
// next issue, it is no reason to reissue.
func mismatch(spec *Cert, crt, ca *x509.Certificate, now time.Time) string {
	if !bytes.Equal(crt.RawIssuer, ca.RawSubject) || crt.CheckSignatureFrom(ca) != nil {
		return "not signed by the current " + spec.CA
	}
	if now.After(crt.NotAfter) {
		return "expired on " + crt.NotAfter.UTC().Format(time.RFC3339)
	}
	if crt.IsCA {
		return "is a CA certificate"
	}
	if crt.Subject.CommonName != spec.CommonName {
		return fmt.Sprintf("common name is %q, want %q", crt.Subject.CommonName, spec.CommonName)
	}
	if !sameSet(crt.Subject.Organization, spec.Organization) {
		return fmt.Sprintf("organization is %v, want %v", crt.Subject.Organization, spec.Organization)
	}
	if !sameSet(crt.DNSNames, spec.DNSNames) {
		return diff("DNS names", crt.DNSNames, spec.DNSNames)
	}
	var ips []string
	for _, ip := range crt.IPAddresses {
		ips = append(ips, normalizeIP(ip))
	}
	if !sameSet(ips, spec.IPAddresses) {
		return diff("IP addresses", ips, spec.IPAddresses)
	}
	if len(crt.URIs) > 0 || len(crt.EmailAddresses) > 0 {
		return "has URI or e-mail SANs"
	}
	var have, want []string
	for _, u := range crt.ExtKeyUsage {
		have = append(have, usageName(u))
	}
	want = spec.Usages()
	if !sameSet(have, want) || len(crt.UnknownExtKeyUsage) > 0 {
		return fmt.Sprintf("extended key usages are %v, want %v", have, want)
	}
	if crt.KeyUsage != x509.KeyUsageDigitalSignature {
		return "key usage is not exactly digital signature"
	}
	if !isP256(crt.PublicKey) {
		return "key is not ECDSA P-256"
	}
	return ""
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y)) && len(a) == len(b)
}

// diff describes a changed set: what the spec adds and drops.
func diff(what string, have, want []string) string {
	var add, drop []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			add = append(add, w)
		}
	}
	for _, h := range have {
		if !slices.Contains(want, h) {
			drop = append(drop, h)
		}
	}
	var parts []string
	if len(add) > 0 {
		parts = append(parts, "adds "+strings.Join(add, ", "))
	}
	if len(drop) > 0 {
		parts = append(parts, "drops "+strings.Join(drop, ", "))
	}
	if len(parts) == 0 {
		parts = append(parts, "duplicates")
	}
	return what + " changed: " + strings.Join(parts, "; ")
}

func normalizeIP(ip net.IP) string {
	if a, ok := netip.AddrFromSlice(ip); ok {
		return a.Unmap().String()
	}
	return ip.String()
}
