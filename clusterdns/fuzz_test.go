package clusterdns

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// FuzzAnswer feeds the resolver any message the dns library can parse:
// it must answer every one with a response that packs, for the same id.
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.default.svc.cluster.local.", dns.TypeA},
		{"_pg._tcp.db.data.svc.cluster.local.", dns.TypeSRV},
		{"db-0.db.data.svc.cluster.local.", dns.TypeANY},
		{"alias.default.svc.cluster.local.", dns.TypeAAAA},
		{"fd00--5.default.pod.cluster.local.", dns.TypeAAAA},
		{"1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR},
		{"_._.web.default.svc.cluster.local.", dns.TypeSRV},
		{"a\\.b.default.svc.cluster.local.", dns.TypeA},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(4096, true)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	r := newTestResolver(nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(data); err != nil {
			return // the server answers these FORMERR before the resolver
		}
		resp, _ := r.Answer(context.Background(), req)
		if resp.Id != req.Id {
			t.Errorf("id %d, want %d", resp.Id, req.Id)
		}
		resp.Truncate(clientSize(req))
		if _, err := resp.Pack(); err != nil {
			t.Errorf("answer to %v does not pack: %v", req, err)
		}
	})
}
