package serviceproxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TableName is the proxy's nftables table (family ip). The proxy never
// touches any other table.
const TableName = "kforge"

// masqMark is the packet mark bit that asks postrouting to masquerade
// (kube-proxy's).
const masqMark = 0x4000

// Names of the fixed chains and sets.
const (
	chainServices      = "services"
	chainEndpointCheck = "endpoints-check"
	setServiceIPs      = "service-ips"
	setNodePorts       = "service-nodeports"
	setNoEndpoints     = "no-endpoint-services"
	setNoEndpointPorts = "no-endpoint-nodeports"
	setNodePortIPs     = "nodeport-ips"
)

// Writer writes Rulesets into the kforge table of one network namespace.
// Sync rebuilds the table in one transaction the first time (and
// whenever asked to), then writes only what changed since the last
// successful sync; a failed transaction leaves the kernel's table as it
// was, and the next Sync starts over with a full rebuild.
type Writer struct {
	conn    *nftables.Conn
	table   *nftables.Table
	applied *Ruleset     // nil: the next sync rebuilds
	rules   atomic.Int64 // rules of the table after the last sync
}

// NewWriter writes into the network namespace of nsFd (-1: the
// process's own).
func NewWriter(nsFd int) (*Writer, error) {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
	if nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Writer{conn: c, table: &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}}, nil
}

// Close releases the netlink socket.
func (w *Writer) Close() error { return w.conn.CloseLasting() }

// Rules is how many rules the table holds after the last sync.
func (w *Writer) Rules() int { return int(w.rules.Load()) }

// Invalidate makes the next Sync a full rebuild.
func (w *Writer) Invalidate() { w.applied = nil }

// Sync makes the table hold rs: a full rebuild when full is set or
// nothing was applied yet, otherwise only the difference from the last
// sync. It returns whether the sync was a full one.
func (w *Writer) Sync(rs *Ruleset, full bool) (bool, error) {
	full = full || w.applied == nil
	var err error
	if full {
		err = w.rebuild(rs)
	} else {
		err = w.update(w.applied, rs)
	}
	if err == nil {
		err = w.conn.Flush()
	}
	if err != nil {
		w.applied = nil
		return full, fmt.Errorf("nftables: table %s: %w", TableName, err)
	}
	w.applied = rs
	w.rules.Store(int64(countRules(rs)))
	return full, nil
}

func countRules(rs *Ruleset) int {
	n := 8 // the fixed chains' rules
	for _, rules := range rs.Chains {
		n += len(rules)
	}
	return n
}

// bigBuffers lets one transaction carry tens of thousands of objects:
// the kernel refuses a netlink message larger than the socket's send
// buffer and drops acknowledgements past its receive buffer.
func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		for _, o := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o, 256<<20); e != nil {
				serr = errors.Join(serr, e)
			}
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		// Without CAP_NET_ADMIN the forced sizes are refused; the
		// ordinary ones are capped by the kernel's maxima.
		_ = c.SetReadBuffer(256 << 20)
		_ = c.SetWriteBuffer(256 << 20)
	}
	return nil
}

// sets are the named sets and maps of the table.
func (w *Writer) sets() map[string]*nftables.Set {
	t := w.table
	concat := func(ts ...nftables.SetDatatype) nftables.SetDatatype { return nftables.MustConcatSetType(ts...) }
	return map[string]*nftables.Set{
		setServiceIPs: {Table: t, Name: setServiceIPs, IsMap: true, Concatenation: true,
			KeyType: concat(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService), DataType: nftables.TypeVerdict},
		setNodePorts: {Table: t, Name: setNodePorts, IsMap: true, Concatenation: true,
			KeyType: concat(nftables.TypeInetProto, nftables.TypeInetService), DataType: nftables.TypeVerdict},
		setNoEndpoints: {Table: t, Name: setNoEndpoints, Concatenation: true,
			KeyType: concat(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)},
		setNoEndpointPorts: {Table: t, Name: setNoEndpointPorts, Concatenation: true,
			KeyType: concat(nftables.TypeInetProto, nftables.TypeInetService)},
		setNodePortIPs: {Table: t, Name: setNodePortIPs, KeyType: nftables.TypeIPAddr},
	}
}

func (w *Writer) chain(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: w.table}
}

// rebuild queues the whole table: created if missing, deleted, created
// anew, so the kernel swaps the old table for the new one in one
// transaction.
func (w *Writer) rebuild(rs *Ruleset) error {
	c := w.conn
	c.AddTable(w.table)
	c.DelTable(w.table)
	c.AddTable(w.table)
	sets := w.sets()
	for _, name := range []string{setServiceIPs, setNodePorts, setNoEndpoints, setNoEndpointPorts, setNodePortIPs} {
		if err := c.AddSet(sets[name], nil); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(rs.AffinitySets) {
		if err := c.AddSet(affinitySet(w.table, name, rs.AffinitySets[name]), nil); err != nil {
			return err
		}
	}
	w.addFixedChains(sets)
	names := sortedKeys(rs.Chains)
	for _, name := range names {
		c.AddChain(w.chain(name))
	}
	for _, name := range names {
		if err := w.addRules(name, rs.Chains[name]); err != nil {
			return err
		}
	}
	return w.addElements(sets, &Ruleset{}, rs)
}

// update queues the difference between the applied ruleset and rs.
func (w *Writer) update(old, rs *Ruleset) error {
	c := w.conn
	sets := w.sets()
	if err := w.deleteElements(sets, old, rs); err != nil {
		return err
	}
	for _, name := range sortedKeys(rs.AffinitySets) {
		if t, ok := old.AffinitySets[name]; !ok || t != rs.AffinitySets[name] {
			if ok {
				continue // a changed timeout is handled below, with the chains using it
			}
			if err := c.AddSet(affinitySet(w.table, name, rs.AffinitySets[name]), nil); err != nil {
				return err
			}
		}
	}
	names := sortedKeys(rs.Chains)
	for _, name := range names {
		if _, ok := old.Chains[name]; !ok {
			c.AddChain(w.chain(name))
		}
	}
	for _, name := range names {
		prev, ok := old.Chains[name]
		if ok && rulesEqual(prev, rs.Chains[name]) {
			continue
		}
		if ok {
			c.FlushChain(w.chain(name))
		}
		if err := w.addRules(name, rs.Chains[name]); err != nil {
			return err
		}
	}
	var gone []string
	for _, name := range sortedKeys(old.Chains) {
		if _, ok := rs.Chains[name]; !ok {
			gone = append(gone, name)
			c.FlushChain(w.chain(name))
		}
	}
	for _, name := range gone {
		c.DelChain(w.chain(name))
	}
	for _, name := range sortedKeys(old.AffinitySets) {
		if _, ok := rs.AffinitySets[name]; !ok {
			c.DelSet(&nftables.Set{Table: w.table, Name: name})
		}
	}
	return w.addElements(sets, old, rs)
}

func affinitySet(t *nftables.Table, name string, timeout time.Duration) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr, Dynamic: true, HasTimeout: true, Timeout: timeout}
}

// addFixedChains queues the base chains (hooks) and their rules.
func (w *Writer) addFixedChains(sets map[string]*nftables.Set) {
	c, t := w.conn, w.table
	accept := nftables.ChainPolicyAccept
	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	services := c.AddChain(w.chain(chainServices))
	check := c.AddChain(w.chain(chainEndpointCheck))
	jump := func(to string) []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: to}} }
	for _, b := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"nat-prerouting", nftables.ChainHookPrerouting}, {"nat-output", nftables.ChainHookOutput}} {
		ch := base(b.name, nftables.ChainTypeNAT, b.hook, nftables.ChainPriorityNATDest)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: jump(chainServices)})
	}
	post := base("nat-postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(masqMark), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(0)},
		&expr.Masq{FullyRandom: true},
	}})
	// Reject (rather than let time out) new connections to a Service
	// with no endpoint: reject is not allowed in nat chains, so filter
	// chains ahead of DNAT do it, in prerouting (before the routing
	// decision, which may have no route for a Service address) and in
	// output for the node's own processes.
	prio := nftables.ChainPriorityRef(*nftables.ChainPriorityNATDest - 10)
	for _, b := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"filter-prerouting", nftables.ChainHookPrerouting}, {"filter-output", nftables.ChainHookOutput}} {
		ch := base(b.name, nftables.ChainTypeFilter, b.hook, prio)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append([]expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(expr.CtStateBitNEW), Xor: u32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(0)},
		}, jump(chainEndpointCheck)...)})
	}
	reject := &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3} // ICMP port unreachable
	c.AddRule(&nftables.Rule{Table: t, Chain: check, Exprs: append(loadAddrProtoPort(),
		&expr.Lookup{SourceRegister: 1, SetName: setNoEndpoints, SetID: sets[setNoEndpoints].ID}, reject)})
	c.AddRule(&nftables.Rule{Table: t, Chain: check, Exprs: append(append(loadDaddrInSet(sets[setNodePortIPs]), loadProtoPort()...),
		&expr.Lookup{SourceRegister: 1, SetName: setNoEndpointPorts, SetID: sets[setNoEndpointPorts].ID}, reject)})
	c.AddRule(&nftables.Rule{Table: t, Chain: services, Exprs: append(loadAddrProtoPort(),
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: setServiceIPs, SetID: sets[setServiceIPs].ID})})
	c.AddRule(&nftables.Rule{Table: t, Chain: services, Exprs: append(append(loadDaddrInSet(sets[setNodePortIPs]), loadProtoPort()...),
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: setNodePorts, SetID: sets[setNodePorts].ID})})
}

// loadAddrProtoPort loads `ip daddr . meta l4proto . th dport` into
// registers 1 (32-bit registers 8, 9, 10).
func loadAddrProtoPort() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// loadProtoPort loads `meta l4proto . th dport`.
func loadProtoPort() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// loadDaddrInSet is `ip daddr @set`.
func loadDaddrInSet(s *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

func u32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// setMasqMark is `meta mark set mark | 0x4000`.
func setMasqMark() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(^uint32(masqMark)), Xor: u32(masqMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// matchSaddrPrefix is `ip saddr [!=] prefix`.
func matchSaddrPrefix(p netip.Prefix, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

func goTo(chain string) *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain} }

// addRules queues the rules of generated chain name.
func (w *Writer) addRules(name string, rules []rule) error {
	c, t, ch := w.conn, w.table, w.chain(name)
	add := func(e ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e}) }
	for _, r := range rules {
		switch r.Kind {
		case ruleMasqSrcNotIn:
			add(append(matchSaddrPrefix(r.Prefix, expr.CmpOpNeq), setMasqMark()...)...)
		case ruleMasq:
			add(setMasqMark()...)
		case ruleLocalToCluster:
			if r.Prefix.IsValid() {
				add(append(matchSaddrPrefix(r.Prefix, expr.CmpOpEq), goTo(r.Target))...)
			}
			e := []expr.Any{
				&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: u32(unix.RTN_LOCAL)},
			}
			e = append(e, setMasqMark()...)
			add(append(e, goTo(r.Target))...)
		case ruleAffinity:
			add(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Lookup{SourceRegister: 1, SetName: r.Set},
				goTo(r.Target))
		case ruleDispatch:
			switch len(r.Targets) {
			case 0:
				add(&expr.Verdict{Kind: expr.VerdictDrop})
			case 1:
				add(goTo(r.Targets[0]))
			default:
				m := &nftables.Set{Table: t, Anonymous: true, Constant: true, IsMap: true,
					KeyType: nftables.TypeInteger, DataType: nftables.TypeVerdict}
				var elems []nftables.SetElement
				for i, target := range r.Targets {
					elems = append(elems, nftables.SetElement{Key: u32(uint32(i)), VerdictData: goTo(target)})
				}
				if err := c.AddSet(m, elems); err != nil {
					return err
				}
				add(&expr.Numgen{Register: 1, Type: unix.NFT_NG_RANDOM, Modulus: uint32(len(r.Targets))},
					&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: m.Name, SetID: m.ID})
			}
		case ruleDrop:
			add(&expr.Verdict{Kind: expr.VerdictDrop})
		case ruleHairpin:
			add(append([]expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.Addr.AsSlice()},
			}, setMasqMark()...)...)
		case ruleAffinityUpdate:
			add(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Dynset{SrcRegKey: 1, SetName: r.Set, Operation: uint32(unix.NFT_DYNSET_OP_UPDATE), Timeout: r.Timeout})
		case ruleDNAT:
			add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{r.Proto}},
				&expr.Immediate{Register: 1, Data: r.Addr.AsSlice()},
				&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(r.Port)},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
		default:
			return fmt.Errorf("chain %s: unknown rule kind %d", name, r.Kind)
		}
	}
	return nil
}

// Element encodings: each field of a concatenation takes a multiple of
// four bytes.
func addrProtoPortKey(k svcKey) []byte {
	b := make([]byte, 12)
	copy(b, k.Addr.AsSlice())
	b[4] = k.Proto
	b[8], b[9] = byte(k.Port>>8), byte(k.Port)
	return b
}

func protoPortKey(k nodePortKey) []byte {
	b := make([]byte, 8)
	b[0] = k.Proto
	b[4], b[5] = byte(k.Port>>8), byte(k.Port)
	return b
}

// elementDiff lists the keys of m in old missing or different in new
// (gone) and of new missing or different in old (added).
func elementDiff[K comparable, V comparable](old, new map[K]V) (gone, added []K) {
	for k, v := range old {
		if nv, ok := new[k]; !ok || nv != v {
			gone = append(gone, k)
		}
	}
	for k, v := range new {
		if ov, ok := old[k]; !ok || ov != v {
			added = append(added, k)
		}
	}
	return gone, added
}

func addrSet(a []netip.Addr) map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for _, x := range a {
		m[x] = true
	}
	return m
}

func (w *Writer) deleteElements(sets map[string]*nftables.Set, old, rs *Ruleset) error {
	return w.elements(sets, old, rs, true)
}

func (w *Writer) addElements(sets map[string]*nftables.Set, old, rs *Ruleset) error {
	return w.elements(sets, old, rs, false)
}

// elements queues the deletion (del) or addition of the set elements
// that differ between old and rs.
func (w *Writer) elements(sets map[string]*nftables.Set, old, rs *Ruleset, del bool) error {
	c := w.conn
	op := c.SetAddElements
	if del {
		op = c.SetDeleteElements
	}
	pick := func(gone, added int) bool { return (del && gone > 0) || (!del && added > 0) }
	var errs []error
	{
		gone, added := elementDiff(old.ServiceIPs, rs.ServiceIPs)
		src, keys := rs.ServiceIPs, added
		if del {
			src, keys = old.ServiceIPs, gone
		}
		if pick(len(gone), len(added)) {
			var el []nftables.SetElement
			for _, k := range keys {
				el = append(el, nftables.SetElement{Key: addrProtoPortKey(k), VerdictData: goTo(src[k])})
			}
			errs = append(errs, op(sets[setServiceIPs], el))
		}
	}
	{
		gone, added := elementDiff(old.NodePorts, rs.NodePorts)
		src, keys := rs.NodePorts, added
		if del {
			src, keys = old.NodePorts, gone
		}
		if pick(len(gone), len(added)) {
			var el []nftables.SetElement
			for _, k := range keys {
				el = append(el, nftables.SetElement{Key: protoPortKey(k), VerdictData: goTo(src[k])})
			}
			errs = append(errs, op(sets[setNodePorts], el))
		}
	}
	{
		gone, added := elementDiff(old.NoEndpoints, rs.NoEndpoints)
		keys := added
		if del {
			keys = gone
		}
		if pick(len(gone), len(added)) {
			var el []nftables.SetElement
			for _, k := range keys {
				el = append(el, nftables.SetElement{Key: addrProtoPortKey(k)})
			}
			errs = append(errs, op(sets[setNoEndpoints], el))
		}
	}
	{
		gone, added := elementDiff(old.NoEndpointNodePorts, rs.NoEndpointNodePorts)
		keys := added
		if del {
			keys = gone
		}
		if pick(len(gone), len(added)) {
			var el []nftables.SetElement
			for _, k := range keys {
				el = append(el, nftables.SetElement{Key: protoPortKey(k)})
			}
			errs = append(errs, op(sets[setNoEndpointPorts], el))
		}
	}
	{
		gone, added := elementDiff(addrSet(old.NodePortAddresses), addrSet(rs.NodePortAddresses))
		keys := added
		if del {
			keys = gone
		}
		if pick(len(gone), len(added)) {
			var el []nftables.SetElement
			for _, k := range keys {
				el = append(el, nftables.SetElement{Key: k.AsSlice()})
			}
			errs = append(errs, op(sets[setNodePortIPs], el))
		}
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// RemoveTable deletes the kforge table of the network namespace of nsFd
// (-1: the process's own), if there is one.
func RemoveTable(nsFd int) error {
	var opts []nftables.ConnOption
	if nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table %s: %w", TableName, err)
	}
	return nil
}
