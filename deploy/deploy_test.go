package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/kv/kvmetrics"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/shadow/control"
)

// decodeAll returns every document of a YAML stream.
func decodeAll(t *testing.T, path string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

func TestEveryFileParses(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			n++
			if docs := decodeAll(t, path); len(docs) == 0 {
				t.Errorf("%s holds no YAML document", path)
			}
		case ".json":
			n++
			raw, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Errorf("%s: %v", path, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 { // example config, manifests, alert rules, dashboard
		t.Fatalf("found %d YAML/JSON files, want at least 4", n)
	}
}

// recorder notes the name of every metric registered through it.
type recorder struct {
	prometheus.Registerer
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) note(c prometheus.Collector) {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.note(c)
	return r.Registerer.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.note(c)
	}
	r.Registerer.MustRegister(cs...)
}

// exported is every metric name a kvproxy serve process exports: the
// metrics package, the control-record metrics, the KV request wrapper, and
// the Go/process collectors of metrics.NewRegistry.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	reg := metrics.NewRegistry()
	rec := &recorder{Registerer: reg, names: map[string]bool{}}
	metrics.New(rec)
	if err := metrics.RegisterControl(rec, control.NewStore(mem.New(), nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := kvmetrics.Wrap(rec, "mem", mem.New()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		rec.names[mf.GetName()] = true
	}
	for _, want := range []string{"kvproxy_statements_total", kvmetrics.DurationName, metrics.BarrierHeldName, "go_goroutines", "process_resident_memory_bytes"} {
		if !rec.names[want] {
			t.Fatalf("%s is not among the exported names; the collection is broken", want)
		}
	}
	return rec.names
}

var metricRef = regexp.MustCompile(`\b(?:kvproxy|go|process)_[a-zA-Z0-9_:]+`)

// known reports whether name is exported, directly or as a histogram's
// _bucket/_sum/_count series.
func known(exp map[string]bool, name string) bool {
	if exp[name] {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && exp[base] {
			return true
		}
	}
	return false
}

// queries collects the values of the given keys anywhere in v.
func queries(v any, keys map[string]bool, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && keys[k] {
				*out = append(*out, s)
			}
			queries(val, keys, out)
		}
	case []any:
		for _, val := range x {
			queries(val, keys, out)
		}
	}
}

func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	exp := exported(t)
	var dash any
	raw, err := os.ReadFile("grafana/kvproxy-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	sources := map[string][]string{}
	var dq []string
	queries(dash, map[string]bool{"expr": true, "query": true, "definition": true}, &dq)
	sources["grafana/kvproxy-dashboard.json"] = dq
	var aq []string
	for _, d := range decodeAll(t, "prometheus/kvproxy-alerts.yaml") {
		queries(d, map[string]bool{"expr": true}, &aq)
	}
	sources["prometheus/kvproxy-alerts.yaml"] = aq

	used := map[string]bool{}
	for file, qs := range sources {
		if len(qs) < 5 {
			t.Errorf("%s: only %d queries found", file, len(qs))
		}
		for _, q := range qs {
			if strings.Count(q, "(") != strings.Count(q, ")") || strings.Count(q, "{") != strings.Count(q, "}") {
				t.Errorf("%s: unbalanced brackets in %q", file, q)
			}
			for _, name := range metricRef.FindAllString(q, -1) {
				used[name] = true
				if !known(exp, name) {
					t.Errorf("%s uses %s, which kvproxy does not export (query %q)", file, name, q)
				}
			}
		}
	}
	// The dashboard is the operator's view of the whole migration: every
	// kvproxy metric appears on it.
	dashUses := strings.Join(dq, "\n")
	var missing []string
	for name := range exp {
		if strings.HasPrefix(name, "kvproxy_") && !regexp.MustCompile(`\b`+name+`(_bucket|_count|_sum)?\b`).MatchString(dashUses) {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard shows no panel for %v", missing)
	}
}

func TestAlertRules(t *testing.T) {
	docs := decodeAll(t, "prometheus/kvproxy-alerts.yaml")
	if len(docs) != 1 {
		t.Fatalf("want one rules document, got %d", len(docs))
	}
	var file struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert       string
				Expr        string
				For         string
				Labels      map[string]string
				Annotations map[string]string
			}
		}
	}
	raw, _ := yaml.Marshal(docs[0])
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" {
				t.Errorf("group %s: incomplete rule %+v", g.Name, r)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			if _, dup := byName[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			byName[r.Alert] = r.Expr
		}
	}
	// The four situations the operator guide promises an alert for.
	cases := []struct{ alert, metric string }{
		{"KVProxyShadowMismatches", "kvproxy_shadow_mismatches_total"},
		{"KVProxyDirtyKeysGrowing", "kvproxy_dirty_keys"},
		{"KVProxyBarrierHeldTooLong", "kvproxy_barrier_held_seconds"},
		{"KVProxyBackfillStalled", "kvproxy_backfill_rows_copied_total"},
	}
	for _, tc := range cases {
		expr, ok := byName[tc.alert]
		if !ok {
			t.Errorf("no alert %s", tc.alert)
			continue
		}
		if !strings.Contains(expr, tc.metric) {
			t.Errorf("%s does not look at %s: %q", tc.alert, tc.metric, expr)
		}
	}
}

// The sidecar example must be deployable as written: the config in the
// ConfigMap, with the Secret's variables, passes kvproxy's own validation,
// the probes hit the admin port, and the service talks to localhost:6432.
func TestKubernetesSidecar(t *testing.T) {
	docs := decodeAll(t, "kubernetes/kvproxy-sidecar.yaml")
	byKind := map[string]map[string]any{}
	for _, d := range docs {
		byKind[d["kind"].(string)] = d
	}
	for _, k := range []string{"ConfigMap", "Secret", "Deployment", "Service"} {
		if byKind[k] == nil {
			t.Fatalf("no %s in the manifests", k)
		}
	}
	get := func(v any, path ...any) any {
		for _, p := range path {
			switch k := p.(type) {
			case string:
				m, _ := v.(map[string]any)
				v = m[k]
			case int:
				l, _ := v.([]any)
				if k >= len(l) {
					return nil
				}
				v = l[k]
			}
		}
		return v
	}
	secretName, _ := get(byKind["Secret"], "metadata", "name").(string)
	secret := map[string]string{}
	for k, v := range get(byKind["Secret"], "stringData").(map[string]any) {
		secret[k] = v.(string)
	}

	containers, _ := get(byKind["Deployment"], "spec", "template", "spec", "containers").([]any)
	if len(containers) != 2 {
		t.Fatalf("deployment has %d containers, want the service and kvproxy", len(containers))
	}
	var proxy, app map[string]any
	for _, c := range containers {
		c := c.(map[string]any)
		if c["name"] == "kvproxy" {
			proxy = c
		} else {
			app = c
		}
	}
	if proxy == nil || app == nil {
		t.Fatal("no kvproxy container next to the service")
	}

	// Config: ConfigMap file + secret env, loaded the way serve loads it.
	cmData, _ := get(byKind["ConfigMap"], "data", "kvproxy.yaml").(string)
	path := filepath.Join(t.TempDir(), "kvproxy.yaml")
	if err := os.WriteFile(path, []byte(cmData), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	for k, v := range secret {
		if strings.HasPrefix(k, "KVPROXY_") {
			env = append(env, k+"="+v)
		}
	}
	cfg, err := config.Load(path, env, nil)
	if err != nil {
		t.Fatalf("the sidecar configuration does not load: %v", err)
	}
	if get(proxy, "envFrom", 0, "secretRef", "name") != secretName {
		t.Errorf("kvproxy does not take its env from the Secret %s", secretName)
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen); host != "127.0.0.1" {
		t.Errorf("listen = %s; a sidecar keeps the client port on loopback", cfg.Listen)
	}
	if cfg.Admin.Token == "" {
		t.Error("no admin token although the admin port is reachable from outside the pod")
	}
	_, adminPort, _ := net.SplitHostPort(cfg.Admin.Listen)
	var cfgPath string
	for _, e := range get(proxy, "env").([]any) {
		if e.(map[string]any)["name"] == "KVPROXY_CONFIG" {
			cfgPath, _ = e.(map[string]any)["value"].(string)
		}
	}
	mount, _ := get(proxy, "volumeMounts", 0, "mountPath").(string)
	if cfgPath != filepath.Join(mount, "kvproxy.yaml") {
		t.Errorf("KVPROXY_CONFIG %q is not the mounted ConfigMap file under %q", cfgPath, mount)
	}

	// Probes.
	portByName := map[string]string{}
	for _, p := range get(proxy, "ports").([]any) {
		p := p.(map[string]any)
		portByName[p["name"].(string)] = strings.TrimSpace(strings.ReplaceAll(yamlScalar(p["containerPort"]), "\n", ""))
	}
	cases := []struct{ probe, path string }{{"readinessProbe", "/readyz"}, {"livenessProbe", "/healthz"}}
	for _, tc := range cases {
		if got := get(proxy, tc.probe, "httpGet", "path"); got != tc.path {
			t.Errorf("%s path = %v, want %s", tc.probe, got, tc.path)
		}
		port, _ := get(proxy, tc.probe, "httpGet", "port").(string)
		if portByName[port] != adminPort {
			t.Errorf("%s port %q is %q, want the admin port %s", tc.probe, port, portByName[port], adminPort)
		}
	}
	// The service connects to the sidecar.
	var dbRef string
	for _, e := range get(app, "env").([]any) {
		e := e.(map[string]any)
		if strings.Contains(e["name"].(string), "DATABASE") {
			dbRef, _ = get(e, "valueFrom", "secretKeyRef", "key").(string)
		}
	}
	u, err := url.Parse(secret[dbRef])
	if err != nil || u.Host != "localhost:6432" {
		t.Errorf("the service's database connection %q does not point at localhost:6432", secret[dbRef])
	}
	_, cfgPort, _ := net.SplitHostPort(cfg.Listen)
	if u != nil && u.Port() != cfgPort {
		t.Errorf("the service connects to port %s, kvproxy listens on %s", u.Port(), cfgPort)
	}
}

func yamlScalar(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms, users []string
	var lastFrom int
	lines := strings.Split(string(raw), "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, l)
			lastFrom = i
		case "USER":
			if i > lastFrom {
				users = append(users, f[1])
			}
		}
	}
	text := string(raw)
	checks := []struct {
		name string
		ok   bool
	}{
		{"multi-stage (two FROM)", len(froms) >= 2 && strings.Contains(froms[0], " AS build")},
		{"final stage copies the binary from the build stage", strings.Contains(text, "COPY --from=build")},
		{"static binary", strings.Contains(text, "-extldflags -static")},
		{"cgo for the SQL parser", strings.Contains(text, "CGO_ENABLED=1")},
		{"final stage runs as non-root", len(users) > 0 && !strings.HasPrefix(users[len(users)-1], "0") && users[len(users)-1] != "root"},
		{"serve is the default command", strings.Contains(text, `CMD ["serve"]`)},
		{"builds cmd/kvproxy", strings.Contains(text, "./cmd/kvproxy")},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("Dockerfile: %s", c.name)
		}
	}
}
