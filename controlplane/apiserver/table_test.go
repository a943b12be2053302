package apiserver

import (
	"context"
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"

func TestTablesForKubectlGet(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "w1", Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}
	if _, err := e.admin.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	raw, err := e.admin.CoreV1().RESTClient().Get().Namespace("default").Resource("pods").
		SetHeader("Accept", tableAccept).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tbl struct {
		metav1.Table
		Rows []struct {
			Cells  []any                        `json:"cells"`
			Object metav1.PartialObjectMetadata `json:"object"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(raw, &tbl); err != nil {
		t.Fatal(err)
	}
	if tbl.Kind != "Table" || tbl.APIVersion != "meta.k8s.io/v1" {
		t.Fatalf("kind %s/%s", tbl.APIVersion, tbl.Kind)
	}
	var names []string
	wide := 0
	for _, c := range tbl.ColumnDefinitions {
		if c.Priority == 0 {
			names = append(names, c.Name)
		} else {
			wide++
		}
	}
	if got := names; len(got) != 5 || got[0] != "Name" || got[1] != "Ready" || got[2] != "Status" || got[3] != "Restarts" || got[4] != "Age" {
		t.Fatalf("default columns %v", got)
	}
	if wide == 0 {
		t.Fatal("no -o wide columns")
	}
	if len(tbl.Rows) != 1 {
		t.Fatalf("%d rows", len(tbl.Rows))
	}
	row := tbl.Rows[0]
	if row.Cells[0] != "web-1" || row.Cells[1] != "0/1" || row.Cells[2] != "Pending" {
		t.Fatalf("cells %v", row.Cells)
	}
	if row.Object.Kind != "PartialObjectMetadata" || row.Object.Namespace != "default" || row.Object.Labels["app"] != "web" {
		t.Fatalf("row object %+v", row.Object)
	}
	// A plain JSON client still gets the object.
	got, err := e.admin.CoreV1().Pods("default").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil || got.Name != "web-1" {
		t.Fatalf("plain get: %v", err)
	}
}
