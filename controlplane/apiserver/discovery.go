package apiserver

import (
	"net/http"
	"runtime"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
)

var (
	readWriteVerbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
	subVerbs       = map[string]metav1.Verbs{
		"status":   {"get", "patch", "update"},
		"scale":    {"get", "patch", "update"},
		"binding":  {"create"},
		"eviction": {"create"},
		"finalize": {"update"},
		"token":    {"create"},
		// Proxied to the node agent (nodeproxy.go).
		"log":         {"get"},
		"proxy":       {"create", "delete", "get", "patch", "update"},
		"exec":        {"create", "get"},
		"attach":      {"create", "get"},
		"portforward": {"create", "get"},
	}
)

// groupVersions lists the served group/versions, legacy group first.
func (reg *Registry) groupVersions() []metav1.GroupVersionForDiscovery {
	seen := map[string]bool{}
	var out []metav1.GroupVersionForDiscovery
	for _, r := range reg.all() {
		gv := r.APIVersion()
		if !seen[gv] && r.Group != "" {
			seen[gv] = true
			out = append(out, metav1.GroupVersionForDiscovery{GroupVersion: gv, Version: r.Version})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].GroupVersion < out[j].GroupVersion })
	return out
}

// APIResourceList is the discovery document of one group/version.
func (reg *Registry) APIResourceList(group, ver string) (*metav1.APIResourceList, bool) {
	list := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}}
	list.GroupVersion = metav1.GroupVersion{Group: group, Version: ver}.String()
	found := false
	for _, r := range reg.all() {
		if r.Group != group || r.Version != ver {
			continue
		}
		found = true
		verbs := readWriteVerbs
		if r.Review != nil {
			verbs = metav1.Verbs{"create"}
		}
		list.APIResources = append(list.APIResources, metav1.APIResource{
			Name: r.Plural, SingularName: r.Singular, Namespaced: r.Namespaced, Kind: r.Kind,
			Verbs: verbs, ShortNames: r.ShortNames, Categories: r.Categories,
		})
		for _, sub := range r.Subresources {
			res := metav1.APIResource{Name: r.Plural + "/" + sub, Namespaced: r.Namespaced, Kind: r.Kind, Verbs: subVerbs[sub]}
			switch sub {
			case "scale":
				res.Group, res.Version, res.Kind = scaleGVK.Group, scaleGVK.Version, scaleGVK.Kind
			case "binding":
				res.Kind = "Binding"
			case "token":
				res.Group, res.Version, res.Kind = tokenRequestGVK.Group, tokenRequestGVK.Version, tokenRequestGVK.Kind
			case "eviction":
				res.Group, res.Version, res.Kind = evictionGVK.Group, evictionGVK.Version, evictionGVK.Kind
			case "log", "exec", "attach", "portforward", "proxy":
				res.Kind = map[string]string{"log": "Pod", "exec": "PodExecOptions", "attach": "PodAttachOptions", "portforward": "PodPortForwardOptions", "proxy": "NodeProxyOptions"}[sub]
			}
			list.APIResources = append(list.APIResources, res)
		}
	}
	return list, found
}

func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request, parts []string) bool {
	if len(parts) >= 2 && parts[0] == "openapi" {
		return s.serveOpenAPI(w, r, strings.Join(parts, "/"))
	}
	switch {
	case len(parts) == 1 && parts[0] == "api":
		writeJSON(w, http.StatusOK, &metav1.APIVersions{
			TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
			Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{
				{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host},
			},
		})
	case len(parts) == 1 && parts[0] == "apis":
		groups := map[string]*metav1.APIGroup{}
		var order []string
		for _, gv := range s.reg.groupVersions() {
			g := gv.GroupVersion[:len(gv.GroupVersion)-len(gv.Version)-1]
			if groups[g] == nil {
				groups[g] = &metav1.APIGroup{Name: g, PreferredVersion: gv}
				order = append(order, g)
			}
			groups[g].Versions = append(groups[g].Versions, gv)
		}
		list := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
		for _, g := range order {
			list.Groups = append(list.Groups, *groups[g])
		}
		writeJSON(w, http.StatusOK, list)
	case len(parts) == 2 && parts[0] == "api" && parts[1] == "v1":
		l, _ := s.reg.APIResourceList("", "v1")
		writeJSON(w, http.StatusOK, l)
	case len(parts) == 2 && parts[0] == "apis":
		var g *metav1.APIGroup
		for _, gv := range s.reg.groupVersions() {
			if gv.GroupVersion == parts[1]+"/"+gv.Version {
				if g == nil {
					g = &metav1.APIGroup{TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}, Name: parts[1], PreferredVersion: gv}
				}
				g.Versions = append(g.Versions, gv)
			}
		}
		if g == nil {
			return false
		}
		writeJSON(w, http.StatusOK, g)
	case len(parts) == 3 && parts[0] == "apis":
		l, ok := s.reg.APIResourceList(parts[1], parts[2])
		if !ok {
			return false
		}
		writeJSON(w, http.StatusOK, l)
	case len(parts) == 1 && parts[0] == "version":
		writeJSON(w, http.StatusOK, s.versionInfo())
	default:
		return false
	}
	return true
}

func (s *Server) versionInfo() version.Info {
	return version.Info{
		Major: "1", Minor: "37", GitVersion: "v1.37.0-kforge+" + s.cfg.Version,
		GitCommit: s.cfg.Commit, GoVersion: runtime.Version(), Compiler: runtime.Compiler,
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
	}
}
