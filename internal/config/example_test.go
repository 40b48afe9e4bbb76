package config

import (
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
)

// The example config is the operator's reference: it must load, equal the
// defaults, and mention every key.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	path := filepath.Join("..", "..", "deploy", "kvproxy.example.yaml")
	c, err := Load(path, nil, nil)
	if err != nil {
		t.Fatalf("example config does not load: %v", err)
	}
	if c != Default() {
		t.Fatalf("example config = %+v, want the defaults %+v", c, Default())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var probe Config
	for _, s := range Settings(&probe) {
		if !hasKey(doc, s.Key) {
			t.Errorf("deploy/kvproxy.example.yaml does not document %s", s.Key)
		}
	}
}

func hasKey(doc map[string]any, key string) bool {
	for i := 0; i < len(key); i++ {
		if key[i] == '.' {
			sub, ok := doc[key[:i]].(map[string]any)
			return ok && hasKey(sub, key[i+1:])
		}
	}
	_, ok := doc[key]
	return ok
}
