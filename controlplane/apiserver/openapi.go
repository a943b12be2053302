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

	openapiv2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"kforge.dev/kforge/controlplane/apiserver/openapi"
)

// openAPIDocs are the OpenAPI documents, built from the resource table
// and again whenever it changes (custom resources come and go): the v3
// root index and one JSON document per group/version, and the v2
// document of everything, in JSON and protobuf (built when asked for).
type openAPIDocs struct {
	mu         sync.Mutex
	built      bool
	generation int64
	root       []byte
	docs       map[string][]byte // "api/v1", "apis/apps/v1"
	etags      map[string]string
	v3         []openapi.Schema
	v2, v2pb   []byte
	v2etag     string
	err        error
}

// current returns the documents of the registry as it is now.
func (s *Server) currentOpenAPI() *openAPIDocs {
	d := &s.openapi
	d.mu.Lock()
	gen := s.reg.generation()
	if !d.built || d.generation != gen {
		d.v2, d.v2pb, d.v3 = nil, nil, nil
		s.buildOpenAPI()
		d.built, d.generation = true, gen
	}
	return d
}

// buildOpenAPI builds the v3 documents; the caller holds s.openapi.mu.
func (s *Server) buildOpenAPI() {
	d := &s.openapi
	d.err = nil
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
		doc := openapi.Document(gv, kinds)
		d.v3 = append(d.v3, doc)
		data, err := json.Marshal(doc)
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
		if r.Custom != nil {
			out = append(out, r.Custom.openAPIKind(r))
			continue
		}
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
	if path == "openapi/v2" {
		s.serveOpenAPIV2(w, r)
		return true
	}
	if path != "openapi/v3" && !strings.HasPrefix(path, "openapi/v3/") {
		return false
	}
	d := s.currentOpenAPI()
	defer d.mu.Unlock()
	if d.err != nil {
		writeError(w, d.err)
		return true
	}
	if path == "openapi/v3" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(d.root)
		return true
	}
	key := strings.TrimPrefix(path, "openapi/v3/")
	data, ok := d.docs[key]
	if !ok {
		return false
	}
	etag := d.etags[key]
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

// openAPIV2Protobuf is the media type client-go's discovery asks
// /openapi/v2 for, and openAPIV2ProtobufReply the one answered, as
// upstream's (a media type may not hold an "@").
const (
	openAPIV2Protobuf      = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
	openAPIV2ProtobufReply = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
)

// serveOpenAPIV2 answers /openapi/v2: the v3 documents merged into one
// Swagger 2.0 document, in JSON, or in gnostic's protobuf form when the
// client accepts that (client-go's OpenAPISchema does).
func (s *Server) serveOpenAPIV2(w http.ResponseWriter, r *http.Request) {
	d := s.currentOpenAPI()
	defer d.mu.Unlock()
	if d.err == nil && d.v2 == nil {
		var doc openapi.Schema
		if doc, d.err = openapi.V2(d.v3); d.err == nil {
			d.v2, d.err = json.Marshal(doc)
		}
		sum := sha512.Sum512(d.v2)
		d.v2etag = fmt.Sprintf(`"%X"`, sum[:32])
	}
	if d.err != nil {
		writeError(w, d.err)
		return
	}
	data, ct := d.v2, "application/json"
	if accept := r.Header.Get("Accept"); strings.Contains(accept, openAPIV2Protobuf) || strings.Contains(accept, openAPIV2ProtobufReply) {
		if d.v2pb == nil {
			doc, err := openapiv2.ParseDocument(d.v2)
			if err == nil {
				d.v2pb, err = proto.Marshal(doc)
			}
			if err != nil {
				writeError(w, fmt.Errorf("openapi v2 in protobuf: %w", err))
				return
			}
		}
		data, ct = d.v2pb, openAPIV2ProtobufReply
	}
	w.Header().Set("Etag", d.v2etag)
	w.Header().Set("Vary", "Accept")
	if r.Header.Get("If-None-Match") == d.v2etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(data)
}
