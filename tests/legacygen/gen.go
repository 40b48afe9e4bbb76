// Package legacygen fills a legacy ref-store database (tests/legacy
// schema) directly with COPY: realistic, seeded data at any size, for the
// backfill and verify tests and benchmarks. Commits have content-hash ids
// (refstore.CommitID), merges of version 0 (reversed parents) and 1,
// generations, metadata as SQL NULL, JSON null, {} and unicode maps; a tail
// of commits no branch or tag reaches; branches with both staging-token
// formats; staged entries with unicode keys and tombstones; tags; and
// orphan staging tokens.
package legacygen

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvproxy/kvproxy/refstore"
)

// Config sizes the data. Zero values take small defaults.
type Config struct {
	Repos           int
	CommitsPerRepo  int
	BranchesPerRepo int
	TagsPerRepo     int
	StagedPerBranch int
	OrphanTokens    int
	Seed            uint64
}

// Bench is the benchmark database of the issue: 100 repositories, 100k
// commits, 10k branches, 1M staged entries, scaled by scale (1 = full).
func Bench(scale float64) Config {
	n := func(v int) int { return max(1, int(float64(v)*scale)) }
	return Config{Repos: n(100), CommitsPerRepo: 1000, BranchesPerRepo: 100, TagsPerRepo: 10, StagedPerBranch: 100, OrphanTokens: n(10), Seed: 1}
}

// Stats counts what was generated.
type Stats struct {
	Repos, Commits, Branches, Tags, Staged, OrphanRows int64
}

// Rows is every row.
func (s Stats) Rows() int64 {
	return s.Repos + s.Commits + s.Branches + s.Tags + s.Staged + s.OrphanRows
}

// Generate loads the data into the database at dsn, which must have the
// legacy schema and no rows for the generated repository ids.
func Generate(ctx context.Context, dsn string, cfg Config) (Stats, error) {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Repos, 3)
	def(&cfg.CommitsPerRepo, 40)
	def(&cfg.BranchesPerRepo, 8)
	def(&cfg.TagsPerRepo, 4)
	def(&cfg.StagedPerBranch, 10)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Stats{}, fmt.Errorf("legacygen: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rnd := rand.New(rand.NewPCG(cfg.Seed, 42))
	base := time.Date(2022, 3, 4, 5, 6, 7, 0, time.UTC)
	var st Stats

	var repos, commits, branches, tags [][]any
	var tokens []string
	for r := range cfg.Repos {
		repo := fmt.Sprintf("repo-%04d", r)
		repos = append(repos, []any{repo, "s3://bucket/" + repo, base.Add(time.Duration(r) * time.Minute).Add(123456 * time.Nanosecond).Truncate(time.Microsecond), "main"})
		ids := make([]string, 0, cfg.CommitsPerRepo)
		gens := map[string]int32{}
		for i := range cfg.CommitsPerRepo {
			c := refstore.CommitContent{
				Committer:    "committer-" + string(rune('a'+i%26)),
				Message:      fmt.Sprintf("commit %d of %s ✓", i, repo),
				MetaRangeID:  fmt.Sprintf("%064x", rnd.Uint64()),
				CreationDate: base.Add(time.Duration(r)*time.Hour + time.Duration(i)*time.Second + time.Duration(rnd.IntN(999999))*time.Microsecond),
			}
			var mdText any
			switch i % 4 {
			case 0:
				mdText = nil
			case 1:
				mdText = "null"
			case 2:
				mdText = "{}"
			default:
				c.Metadata = map[string]string{"ключ": "значение", "k": fmt.Sprintf("v%d\n\"q\"", i)}
				b, _ := json.Marshal(c.Metadata)
				mdText = string(b)
			}
			version := int32(rnd.IntN(2))
			var parents []string
			gen := int32(1)
			if i == 0 {
				c.Committer, c.MetaRangeID = "", ""
			} else {
				parents = []string{ids[i-1]}
				if i >= 3 && rnd.IntN(8) == 0 {
					other := ids[rnd.IntN(i-1)]
					if version == 0 {
						parents = []string{other, ids[i-1]}
					} else {
						parents = append(parents, other)
					}
				}
				for _, p := range parents {
					gen = max(gen, gens[p]+1)
				}
			}
			c.Parents = parents
			id := refstore.CommitID(c)
			gens[id] = gen
			ids = append(ids, id)
			commits = append(commits, []any{repo, id, c.Committer, c.Message, c.CreationDate.Truncate(time.Microsecond), c.MetaRangeID, mdText, parents, version, gen})
		}
		// The last twentieth of the commits is reached by no branch or tag.
		reach := max(1, len(ids)-len(ids)/20)
		for b := range cfg.BranchesPerRepo {
			name := "main"
			if b > 0 {
				name = fmt.Sprintf("feature-ü-%04d", b)
			}
			head := ids[reach-1]
			if b > 0 {
				head = ids[rnd.IntN(reach)]
			}
			sep := ":"
			if b%2 == 1 {
				sep = "-"
			}
			tok := fmt.Sprintf("%s-%s%s%08x-%04x-%04x-%04x-%012x", repo, name, sep, rnd.Uint32(), rnd.IntN(1<<16), rnd.IntN(1<<16), rnd.IntN(1<<16), rnd.Uint64()&(1<<48-1))
			tokens = append(tokens, tok)
			branches = append(branches, []any{repo, name, tok, head})
		}
		for t := range cfg.TagsPerRepo {
			tags = append(tags, []any{repo, fmt.Sprintf("v%d.%d", t/10, t%10), ids[rnd.IntN(reach)]})
		}
	}
	orphans := make([]string, cfg.OrphanTokens)
	for i := range orphans {
		orphans[i] = fmt.Sprintf("orphan-%d:%016x", i, rnd.Uint64())
	}
	copyRows := func(table string, cols []string, rows [][]any) (int64, error) {
		n, err := conn.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(rows))
		if err != nil {
			return 0, fmt.Errorf("legacygen: copy %s: %w", table, err)
		}
		return n, nil
	}
	if st.Repos, err = copyRows("graveler_repositories", []string{"id", "storage_namespace", "creation_date", "default_branch"}, repos); err != nil {
		return st, err
	}
	if st.Commits, err = copyRows("graveler_commits", []string{"repository_id", "id", "committer", "message", "creation_date", "meta_range_id", "metadata", "parents", "version", "generation"}, commits); err != nil {
		return st, err
	}
	if st.Branches, err = copyRows("graveler_branches", []string{"repository_id", "id", "staging_token", "commit_id"}, branches); err != nil {
		return st, err
	}
	if st.Tags, err = copyRows("graveler_tags", []string{"repository_id", "id", "commit_id"}, tags); err != nil {
		return st, err
	}
	// Staged entries are produced as COPY consumes them: memory stays
	// small at a million rows.
	all := append(slices.Clone(tokens), orphans...)
	ti, ki := 0, 0
	var row []any
	staged := func() bool {
		for ti < len(all) && ki >= cfg.StagedPerBranch {
			ti, ki = ti+1, 0
		}
		if ti >= len(all) {
			return false
		}
		var key string
		switch ki % 3 {
		case 0:
			key = fmt.Sprintf("data/%06d.parquet", ki)
		case 1:
			key = fmt.Sprintf("путь/файл-%06d ✓.csv", ki)
		default:
			key = fmt.Sprintf("logs/%06d/\x01raw", ki)
		}
		var identity, data any
		if ki%7 == 3 {
			identity = nil // tombstone
			if ki%2 == 0 {
				data = []byte{}
			}
		} else {
			id := make([]byte, 16)
			for i := range id {
				id[i] = byte(rnd.Uint32())
			}
			identity = id
			data = fmt.Appendf(nil, `{"address":"s3://x/%d","size":%d}`, ki, rnd.IntN(1<<20))
		}
		row = []any{all[ti], []byte(key), identity, data}
		ki++
		return true
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"graveler_staging_kv"}, []string{"staging_token", "key", "identity", "data"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if !staged() {
				return nil, nil
			}
			return row, nil
		}))
	if err != nil {
		return st, fmt.Errorf("legacygen: copy graveler_staging_kv: %w", err)
	}
	st.OrphanRows = int64(len(orphans) * cfg.StagedPerBranch)
	st.Staged = n - st.OrphanRows
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return st, fmt.Errorf("legacygen: analyze: %w", err)
	}
	return st, nil
}
