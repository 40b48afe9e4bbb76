package dirty

import (
	"fmt"

	"github.com/kvproxy/kvproxy/translate"
)

// Entity names, shared with backfill and verify.
const (
	Repositories = "repositories"
	Commits      = "commits"
	Branches     = "branches"
	Tags         = "tags"
	Staging      = "staging"
)

// Key names what a write touched. For repositories, commits, branches and
// tags, Repository is the repository id and ID the row id; an empty ID means
// every row of the entity in that repository. For staging, ID is the staging
// token and StagingKey the object key; a nil StagingKey means the whole token.
type Key struct {
	Entity     string `json:"entity"`
	Repository string `json:"repository,omitempty"`
	ID         string `json:"id,omitempty"`
	StagingKey []byte `json:"staging_key,omitempty"`
}

// Whole reports whether the key names a set of rows rather than one.
func (k Key) Whole() bool {
	if k.Entity == Staging {
		return k.StagingKey == nil
	}
	return k.ID == ""
}

func (k Key) String() string {
	switch {
	case k.Entity == Repositories:
		return "repositories/" + k.ID
	case k.Entity == Staging && k.StagingKey == nil:
		return "staging/" + k.ID + "/*"
	case k.Entity == Staging:
		return fmt.Sprintf("staging/%s/%q", k.ID, k.StagingKey)
	case k.ID == "":
		return k.Entity + "/" + k.Repository + "/*"
	}
	return k.Entity + "/" + k.Repository + "/" + k.ID
}

// KeysOf returns the keys a ref-store write statement touches, from its
// plan and slot values (translate.Plan.SlotValues). Reads touch nothing. A
// NULL where a key column is expected touches nothing either: such a
// statement matches no row or fails.
func KeysOf(p *translate.Plan, args []translate.Value) []Key {
	str := func(i int) (string, bool) {
		if i >= len(args) || args[i].Null {
			return "", false
		}
		return args[i].Str, true
	}
	one := func(entity string, repoSlot, idSlot int) []Key {
		repo, ok1 := str(repoSlot)
		id, ok2 := str(idSlot)
		if !ok1 || !ok2 {
			return nil
		}
		return []Key{{Entity: entity, Repository: repo, ID: id}}
	}
	all := func(entity string) []Key {
		repo, ok := str(0)
		if !ok {
			return nil
		}
		return []Key{{Entity: entity, Repository: repo}}
	}
	switch p.Shape {
	case translate.R2, translate.R4Repository:
		id, ok := str(0)
		if !ok {
			return nil
		}
		return []Key{{Entity: Repositories, ID: id}}
	case translate.R4Branches:
		return all(Branches)
	case translate.R4Tags:
		return all(Tags)
	case translate.R4Commits:
		return all(Commits)
	case translate.B2, translate.B3, translate.B4:
		return one(Branches, 0, 1)
	case translate.T2, translate.T3:
		return one(Tags, 0, 1)
	case translate.C3:
		return one(Commits, 0, 1)
	case translate.C7:
		repo, ok := str(0)
		if !ok {
			return nil
		}
		keys := make([]Key, 0, len(p.Generations))
		for _, g := range p.Generations {
			keys = append(keys, Key{Entity: Commits, Repository: repo, ID: g.ID})
		}
		return keys
	case translate.S2, translate.S3, translate.S4:
		token, ok := str(0)
		if !ok || len(args) < 2 || args[1].Null {
			return nil
		}
		k := args[1].Bytes
		if k == nil {
			k = []byte{}
		}
		return []Key{{Entity: Staging, ID: token, StagingKey: k}}
	case translate.S5, translate.S6a, translate.S6b:
		token, ok := str(0)
		if !ok {
			return nil
		}
		return []Key{{Entity: Staging, ID: token}}
	}
	return nil
}
