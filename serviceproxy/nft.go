package serviceproxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
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
	setEndpoints       = "service-endpoints"
	setHairpin         = "hairpin"
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
	// ids number the chains that pick among several endpoints: their
	// endpoints are the elements (id . index) of service-endpoints.
	ids    map[string]uint32
	freeID []uint32
	nextID uint32
	// pending are the service-endpoints elements of the rules queued so
	// far, added once every rule is: a rule that binds the map makes the
	// kernel check each element already in it, so elements go in last.
	pending []nftables.SetElement
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
		w.applied, w.ids, w.pending = nil, nil, nil
		return full, fmt.Errorf("nftables: table %s: %w", TableName, err)
	}
	w.applied = rs
	w.rules.Store(int64(countRules(rs)))
	return full, nil
}

func countRules(rs *Ruleset) int {
	n := 9 // the fixed chains' rules
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
		setHairpin:     {Table: t, Name: setHairpin, Concatenation: true, KeyType: concat(nftables.TypeIPAddr, nftables.TypeIPAddr)},
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
	w.ids, w.freeID, w.nextID = map[string]uint32{}, nil, 0
	for _, name := range []string{setServiceIPs, setNodePorts, setNoEndpoints, setNoEndpointPorts, setNodePortIPs, setHairpin} {
		if err := c.AddSet(sets[name], nil); err != nil {
			return err
		}
	}
	for i := range endpointShards {
		if err := c.AddSet(w.endpointMap(uint32(i)), nil); err != nil {
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
	if err := w.addPending(); err != nil {
		return err
	}
	return w.queueElements(sets, diffElements(&Ruleset{}, rs), false)
}

func (w *Writer) addPending() error {
	byShard := map[uint32][]nftables.SetElement{}
	for _, e := range w.pending {
		id := binaryutil.NativeEndian.Uint32(e.Key[:4])
		byShard[id%endpointShards] = append(byShard[id%endpointShards], e)
	}
	w.pending = nil
	for shard, el := range byShard {
		if err := chunked(w.conn.SetAddElements)(w.endpointMap(shard), el); err != nil {
			return err
		}
	}
	return nil
}

// endpointShards is how many maps the endpoints of the services are
// spread over (by chain number). Each rule that looks a map up is one
// more binding of it, and the kernel walks a map's bindings when it
// binds another: spread, the walks stay short with tens of thousands of
// services.
const endpointShards = 128

// endpointMap is shard i of service-endpoints: (chain number . index)
// to (address . port).
func (w *Writer) endpointMap(i uint32) *nftables.Set {
	return &nftables.Set{Table: w.table, Name: setEndpoints + "-" + strconv.Itoa(int(i)), IsMap: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeInteger, nftables.TypeInteger),
		DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
}

// update queues the difference between the applied ruleset and rs.
func (w *Writer) update(old, rs *Ruleset) error {
	c := w.conn
	sets := w.sets()
	ops := diffElements(old, rs)
	if err := w.queueElements(sets, ops, true); err != nil {
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
			if err := w.deleteEndpoints(name, prev); err != nil {
				return err
			}
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
			if err := w.deleteEndpoints(name, old.Chains[name]); err != nil {
				return err
			}
			if id, ok := w.ids[name]; ok {
				delete(w.ids, name)
				w.freeID = append(w.freeID, id)
			}
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
	if err := w.addPending(); err != nil {
		return err
	}
	return w.queueElements(sets, ops, false)
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
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: setHairpin, SetID: sets[setHairpin].ID},
		&expr.Masq{FullyRandom: true},
	}})
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
		case ruleDNATRandom:
			id := w.idFor(name)
			add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{r.Proto}},
				&expr.Immediate{Register: 1, Data: u32(id)},
				&expr.Numgen{Register: 9, Type: unix.NFT_NG_RANDOM, Modulus: uint32(len(r.Endpoints))},
				&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: w.endpointMap(id % endpointShards).Name},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9, Specified: true})
			for i, ap := range r.Endpoints {
				w.pending = append(w.pending, nftables.SetElement{Key: endpointKey(id, i), Val: addrPortVal(ap)})
			}
		default:
			return fmt.Errorf("chain %s: unknown rule kind %d", name, r.Kind)
		}
	}
	return nil
}

// idFor is the number of chain name in service-endpoints, allocated on
// first use.
func (w *Writer) idFor(name string) uint32 {
	if id, ok := w.ids[name]; ok {
		return id
	}
	var id uint32
	if n := len(w.freeID); n > 0 {
		id, w.freeID = w.freeID[n-1], w.freeID[:n-1]
	} else {
		id = w.nextID
		w.nextID++
	}
	w.ids[name] = id
	return id
}

// deleteEndpoints queues the removal of chain name's elements of
// service-endpoints, written for its rules.
func (w *Writer) deleteEndpoints(name string, rules []rule) error {
	id, ok := w.ids[name]
	if !ok {
		return nil
	}
	for _, r := range rules {
		if r.Kind != ruleDNATRandom {
			continue
		}
		var el []nftables.SetElement
		for i := range r.Endpoints {
			el = append(el, nftables.SetElement{Key: endpointKey(id, i)})
		}
		return chunked(w.conn.SetDeleteElements)(w.endpointMap(id%endpointShards), el)
	}
	return nil
}

func endpointKey(id uint32, i int) []byte { return append(u32(id), u32(uint32(i))...) }

func addrPortVal(ap netip.AddrPort) []byte {
	b := make([]byte, 8)
	copy(b, ap.Addr().AsSlice())
	b[4], b[5] = byte(ap.Port()>>8), byte(ap.Port())
	return b
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

// elementOps are the element changes of the fixed sets and maps between
// two rulesets, by set name: what goes (queued before the chains change)
// and what comes (after).
type elementOps struct {
	gone, added map[string][]nftables.SetElement
}

// diffElements computes the element changes from old to rs once.
func diffElements(old, rs *Ruleset) elementOps {
	ops := elementOps{gone: map[string][]nftables.SetElement{}, added: map[string][]nftables.SetElement{}}
	{
		gone, added := elementDiff(old.ServiceIPs, rs.ServiceIPs)
		for _, k := range gone {
			ops.gone[setServiceIPs] = append(ops.gone[setServiceIPs], nftables.SetElement{Key: addrProtoPortKey(k), VerdictData: goTo(old.ServiceIPs[k])})
		}
		for _, k := range added {
			ops.added[setServiceIPs] = append(ops.added[setServiceIPs], nftables.SetElement{Key: addrProtoPortKey(k), VerdictData: goTo(rs.ServiceIPs[k])})
		}
	}
	{
		gone, added := elementDiff(old.NodePorts, rs.NodePorts)
		for _, k := range gone {
			ops.gone[setNodePorts] = append(ops.gone[setNodePorts], nftables.SetElement{Key: protoPortKey(k), VerdictData: goTo(old.NodePorts[k])})
		}
		for _, k := range added {
			ops.added[setNodePorts] = append(ops.added[setNodePorts], nftables.SetElement{Key: protoPortKey(k), VerdictData: goTo(rs.NodePorts[k])})
		}
	}
	{
		gone, added := elementDiff(old.NoEndpoints, rs.NoEndpoints)
		for _, k := range gone {
			ops.gone[setNoEndpoints] = append(ops.gone[setNoEndpoints], nftables.SetElement{Key: addrProtoPortKey(k)})
		}
		for _, k := range added {
			ops.added[setNoEndpoints] = append(ops.added[setNoEndpoints], nftables.SetElement{Key: addrProtoPortKey(k)})
		}
	}
	{
		gone, added := elementDiff(old.NoEndpointNodePorts, rs.NoEndpointNodePorts)
		for _, k := range gone {
			ops.gone[setNoEndpointPorts] = append(ops.gone[setNoEndpointPorts], nftables.SetElement{Key: protoPortKey(k)})
		}
		for _, k := range added {
			ops.added[setNoEndpointPorts] = append(ops.added[setNoEndpointPorts], nftables.SetElement{Key: protoPortKey(k)})
		}
	}
	{
		gone, added := elementDiff(addrSet(old.NodePortAddresses), addrSet(rs.NodePortAddresses))
		for _, k := range gone {
			ops.gone[setNodePortIPs] = append(ops.gone[setNodePortIPs], nftables.SetElement{Key: k.AsSlice()})
		}
		for _, k := range added {
			ops.added[setNodePortIPs] = append(ops.added[setNodePortIPs], nftables.SetElement{Key: k.AsSlice()})
		}
	}
	{
		gone, added := elementDiff(old.Hairpin, rs.Hairpin)
		for _, k := range gone {
			ops.gone[setHairpin] = append(ops.gone[setHairpin], nftables.SetElement{Key: append(k[:], k[:]...)})
		}
		for _, k := range added {
			ops.added[setHairpin] = append(ops.added[setHairpin], nftables.SetElement{Key: append(k[:], k[:]...)})
		}
	}
	return ops
}

// queueElements queues the deletions (del) or additions of ops.
func (w *Writer) queueElements(sets map[string]*nftables.Set, ops elementOps, del bool) error {
	op, which := chunked(w.conn.SetAddElements), ops.added
	if del {
		op, which = chunked(w.conn.SetDeleteElements), ops.gone
	}
	for _, name := range sortedKeys(which) {
		if err := op(sets[name], which[name]); err != nil {
			return err
		}
	}
	return nil
}

// chunked splits an element operation into messages of at most
// elementsPerMessage elements: a netlink attribute's length is 16 bits,
// and the nested element list of one message must fit in it.
func chunked(op func(*nftables.Set, []nftables.SetElement) error) func(*nftables.Set, []nftables.SetElement) error {
	return func(s *nftables.Set, el []nftables.SetElement) error {
		for len(el) > 0 {
			n := min(len(el), elementsPerMessage)
			if err := op(s, el[:n]); err != nil {
				return err
			}
			el = el[n:]
		}
		return nil
	}
}

const elementsPerMessage = 256

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
