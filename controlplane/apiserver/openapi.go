package apiserver

import (
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"kforge.dev/kforge/controlplane/apiserver/openapi"
)

// openAPIDocs are the OpenAPI v3 documents, built once from the resource
// table: the root index and one JSON document per group/version.
type openAPIDocs struct {
	once  sync.Once
	root  []byte
	docs  map[string][]byte // "api/v1", "apis/apps/v1"
	etags map[string]string
	err   error
}

func (s *Server) buildOpenAPI() {
	d := &s.openapi
	byGV := map[schema.GroupVersion][]openapi.Kind{}
	for _, k := range s.openAPIKinds() {
		gv := schema.GroupVersion{Group: k.Group, Version: k.Version}
		byGV[gv] = append(byGV[gv], k)
	}
	d.docs, d.etags = map[string][]byte{}, map[string]string{}
	index := map[string]map[string]string{}
	var keys []string
	for gv, kinds := range byGV {
		key := "apis/" + gv.Group + "/" + gv.Version
		if gv.Group == "" {
			key = "api/" + gv.Version
		}
		data, err := json.Marshal(openapi.Document(gv, kinds))
		if err != nil {
			d.err = fmt.Errorf("openapi for %s: %w", gv, err)
			return
		}
		sum := sha512.Sum512(data)
		hash := fmt.Sprintf("%X", sum[:32])
		d.docs[key], d.etags[key] = data, `"`+hash+`"`
		index[key] = map[string]string{"serverRelativeURL": "/openapi/v3/" + key + "?hash=" + hash}
		keys = append(keys, key)
	}
	sort.Strings(keys)
	d.root, d.err = json.Marshal(map[string]any{"paths": index})
}

// openAPIKinds describes the resource table for the openapi package.
func (s *Server) openAPIKinds() []openapi.Kind {
	var out []openapi.Kind
	for _, r := range s.reg.all() {
		out = append(out, openapi.Kind{
			Group: r.Group, Version: r.Version, Kind: r.Kind, Plural: r.Plural, Namespaced: r.Namespaced,
			Subresources: r.Subresources,
			Object:       reflect.TypeOf(r.New()).Elem(), List: reflect.TypeOf(r.NewList()).Elem(),
			CreateOnly: r.Review != nil,
		})
	}
	return out
}

// serveOpenAPI answers /openapi/v3 and /openapi/v3/<group-version>.
func (s *Server) serveOpenAPI(w http.ResponseWriter, r *http.Request, path string) bool {
	if path != "openapi/v3" && !strings.HasPrefix(path, "openapi/v3/") {
		return false
	}
	s.openapi.once.Do(s.buildOpenAPI)
	if s.openapi.err != nil {
		writeError(w, s.openapi.err)
		return true
	}
	if path == "openapi/v3" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(s.openapi.root)
		return true
	}
	key := strings.TrimPrefix(path, "openapi/v3/")
	data, ok := s.openapi.docs[key]
	if !ok {
		return false
	}
	etag := s.openapi.etags[key]
	w.Header().Set("Etag", etag)
	if r.URL.Query().Get("hash") != "" {
		w.Header().Set("Cache-Control", "public, immutable")
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
	return true
}
