package apiserver

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/randfill"
)

// TestEventConversionKeepsEveryField fills every field of each version
// with random values and converts there and back: a field the mapping
// forgot comes back empty.
func TestEventConversionKeepsEveryField(t *testing.T) {
	f := randfill.NewWithSeed(1).NilChance(0).NumElements(1, 2)
	for i := 0; i < 50; i++ {
		var ev eventsv1.Event
		f.Fill(&ev)
		ev.APIVersion, ev.Kind = "events.k8s.io/v1", "Event"
		core, err := eventToCore(ev.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		back, err := eventFromCore(core)
		if err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(back, &ev) {
			t.Fatalf("events.k8s.io -> v1 -> events.k8s.io lost fields:\n%#v\n%#v", &ev, back)
		}

		var ce corev1.Event
		f.Fill(&ce)
		ce.APIVersion, ce.Kind = "v1", "Event"
		nev, err := eventFromCore(ce.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		again, err := eventToCore(nev)
		if err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(again, &ce) {
			t.Fatalf("v1 -> events.k8s.io -> v1 lost fields:\n%#v\n%#v", &ce, again)
		}
	}
	// The two types have the same number of fields: one mapping each.
	if a, b := reflect.TypeOf(eventsv1.Event{}).NumField(), reflect.TypeOf(corev1.Event{}).NumField(); a != b {
		t.Fatalf("events.k8s.io Event has %d fields, core Event %d: the mapping needs a look", a, b)
	}
}
