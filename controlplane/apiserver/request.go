package apiserver

import (
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// request is a parsed resource request.
type request struct {
	res  *Resource
	ns   string // namespace from the URL
	name string
	sub  string // subresource
	verb string // get list watch create update patch delete deletecollection
	user user
	// proxyPath is the path after nodes/NAME/proxy/ (nodeproxy.go).
	proxyPath string
}

// parseRequest maps a path (without the leading "/") to a resource
// request: api/v1/[namespaces/NS/]RES[/NAME[/SUB]] and the same under
// apis/GROUP/VERSION.
func (s *Server) parseRequest(r *http.Request, parts []string) (*request, error) {
	var group, version string
	var rest []string
	switch {
	case parts[0] == "api" && len(parts) >= 2:
		group, version, rest = "", parts[1], parts[2:]
	case parts[0] == "apis" && len(parts) >= 3:
		group, version, rest = parts[1], parts[2], parts[3:]
	default:
		return nil, notFoundPath(r)
	}
	req := &request{}
	if len(rest) >= 3 && rest[0] == "namespaces" && !(len(rest) == 3 && (rest[2] == "status" || rest[2] == "finalize")) {
		req.ns, rest = rest[1], rest[2:]
	}
	if len(rest) > 3 && rest[2] == "proxy" {
		req.proxyPath, rest = strings.Join(rest[3:], "/"), rest[:3]
	}
	if len(rest) == 0 || len(rest) > 3 {
		return nil, notFoundPath(r)
	}
	req.res = s.reg.Lookup(group, version, rest[0])
	if req.res == nil {
		return nil, notFoundPath(r)
	}
	if req.ns != "" && !req.res.Namespaced {
		return nil, notFoundPath(r)
	}
	if len(rest) >= 2 {
		req.name = rest[1]
	}
	if len(rest) == 3 {
		req.sub = rest[2]
		if !req.res.HasSubresource(req.sub) {
			return nil, notFoundPath(r)
		}
	}
	if req.name == "" && req.res.Namespaced && req.ns == "" && r.Method != http.MethodGet {
		return nil, apierrors.NewBadRequest("a namespace is required for " + req.res.Plural)
	}
	if req.res.Review != nil && (r.Method != http.MethodPost || req.name != "") {
		return nil, apierrors.NewMethodNotSupported(req.gr(), r.Method)
	}
	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet:
		switch {
		case req.name != "":
			req.verb = "get"
		case q.Get("watch") == "1" || q.Get("watch") == "true":
			req.verb = "watch"
		default:
			req.verb = "list"
		}
	case http.MethodPost:
		req.verb = "create"
		if req.name != "" && req.sub != "binding" && req.sub != "token" && req.sub != "eviction" && !nodeAgentSubresources[req.sub] {
			return nil, apierrors.NewMethodNotSupported(req.gr(), "POST to a named "+req.res.Singular)
		}
	case http.MethodPut:
		req.verb = "update"
	case http.MethodPatch:
		req.verb = "patch"
	case http.MethodDelete:
		req.verb = "delete"
		if req.name == "" {
			req.verb = "deletecollection"
		}
	default:
		return nil, apierrors.NewMethodNotSupported(req.res.GroupVersion().WithResource(req.res.Plural).GroupResource(), r.Method)
	}
	if (req.verb == "update" || req.verb == "patch") && req.name == "" {
		return nil, apierrors.NewMethodNotSupported(req.gr(), req.verb+" without a name")
	}
	if verbs, ok := subresourceVerbs[req.sub]; ok && !verbs[req.verb] {
		return nil, apierrors.NewMethodNotSupported(req.gr(), r.Method+" on "+req.res.Plural+"/"+req.sub)
	}
	// As upstream, namespaces have no collection delete: one request
	// must not remove every namespace.
	if req.res.Group == "" && req.res.Plural == "namespaces" && req.verb == "deletecollection" {
		return nil, apierrors.NewMethodNotSupported(req.gr(), "deletecollection")
	}
	if nodeAgentSubresources[req.sub] {
		switch {
		case req.sub == "proxy":
			// nodes/proxy: the verb of the method, as upstream.
		case req.sub == "log":
			// pods/log is read-only: GET alone, as upstream.
			if r.Method != http.MethodGet {
				return nil, apierrors.NewMethodNotSupported(req.gr(), r.Method+" on pods/log")
			}
			req.verb = "get"
		case r.Method != http.MethodGet && r.Method != http.MethodPost:
			// exec, attach and portforward are connections: GET (a
			// WebSocket upgrade) or POST (SPDY), nothing else.
			return nil, apierrors.NewMethodNotSupported(req.gr(), r.Method+" on "+req.res.Plural+"/"+req.sub)
		default:
			// exec, attach and portforward run things: create, also for
			// a WebSocket upgrade, which is a GET.
			req.verb = "create"
		}
		return req, nil
	}
	if req.sub == "binding" && req.verb != "create" {
		return nil, apierrors.NewMethodNotSupported(req.gr(), req.verb+" on pods/binding")
	}
	return req, nil
}

func (req *request) gr() schema.GroupResource {
	return schema.GroupResource{Group: req.res.Group, Resource: req.res.Plural}
}

func notFoundPath(r *http.Request) error {
	e := apierrors.NewNotFound(schema.GroupResource{}, "")
	e.ErrStatus.Message = fmt.Sprintf("the server could not find the requested resource (%s %s)", r.Method, r.URL.Path)
	e.ErrStatus.Details = nil
	return e
}

// subresourceVerbs are the verbs each stored subresource answers, as
// upstream registers them (status and scale: get, update, patch; binding:
// create; a namespace's finalize: update). Any other verb is a 405 and
// leaves the object alone.
var subresourceVerbs = map[string]map[string]bool{
	"status":   {"get": true, "update": true, "patch": true},
	"scale":    {"get": true, "update": true, "patch": true},
	"binding":  {"create": true},
	"token":    {"create": true},
	"eviction": {"create": true},
	"finalize": {"update": true},
}
