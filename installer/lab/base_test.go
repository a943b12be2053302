package lab

import (
	"reflect"
	"testing"
)

func TestRecipeHash(t *testing.T) {
	a := DefaultRecipe()
	if a.Hash() != DefaultRecipe().Hash() {
		t.Fatal("hash is not stable")
	}
	b := DefaultRecipe()
	b.Packages = append(b.Packages, "curl")
	c := DefaultRecipe()
	c.Script += "\ntrue\n"
	if a.Hash() == b.Hash() || a.Hash() == c.Hash() {
		t.Error("a changed recipe must change the hash")
	}
}

func TestMirrorParsing(t *testing.T) {
	deb822 := `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
`
	if got, want := deb822URIs(deb822), []string{"http://deb.debian.org/debian"}; !reflect.DeepEqual(got, want) {
		t.Errorf("deb822URIs = %v, want %v", got, want)
	}
	oneLine := `# comment
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib
deb http://security.debian.org/debian-security bookworm-security main
deb-src http://x/debian bookworm main
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
`
	if got, want := oneLineURIs(oneLine), []string{"http://mirror.example/debian"}; !reflect.DeepEqual(got, want) {
		t.Errorf("oneLineURIs = %v, want %v", got, want)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/a\040b/c`); got != "/a b/c" {
		t.Errorf("got %q", got)
	}
	if got := unescapeMount(`/plain`); got != "/plain" {
		t.Errorf("got %q", got)
	}
}
