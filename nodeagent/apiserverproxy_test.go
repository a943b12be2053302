package nodeagent

import (
	"reflect"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func TestAPIServerAddrs(t *testing.T) {
	slices := []*discoveryv1.EndpointSlice{
		{
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To[int32](6443)}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"198.18.0.12"}},
				{Addresses: []string{"198.18.0.11"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
				{Addresses: []string{"198.18.0.13"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
			},
		},
		{ // a second slice repeating one address
			Ports:     []discoveryv1.EndpointPort{{Port: ptr.To[int32](6443)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"198.18.0.11"}}},
		},
		{ // no port: nothing to reach
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"198.18.0.14"}}},
		},
	}
	got := apiServerAddrs(slices)
	want := []string{"198.18.0.11:6443", "198.18.0.12:6443"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("apiServerAddrs = %v, want %v", got, want)
	}
	if got := apiServerAddrs(nil); len(got) != 0 {
		t.Errorf("no slices: %v", got)
	}
}
