// Package hfcache finds models in the local Hugging Face hub cache, laid out as
// huggingface_hub writes it (https://huggingface.co/docs/hub/local-cache):
//
//	<cache>/models--ORG--NAME/refs/<revision>     a file holding a commit hash
//	<cache>/models--ORG--NAME/snapshots/<commit>/  the repository's files, symlinks into blobs/
//	<cache>/models--ORG--NAME/blobs/<hash>         the files' contents
//
// It never touches the network: a model that is not in the cache is an error
// that says where it looked and how to download it.
package hfcache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Sentinel errors; every error of this package wraps one.
var (
	// ErrNotCached: the id, or the revision asked for, is not in the cache.
	ErrNotCached = errors.New("hfcache: not in the local Hugging Face cache")
	// ErrRevision: a revision was given with a local path, or is malformed.
	ErrRevision = errors.New("hfcache: bad revision")
)

// DefaultRevision is the revision huggingface_hub resolves when none is given.
const DefaultRevision = "main"

// Dir returns the hub cache directory as huggingface_hub computes it:
// $HF_HUB_CACHE, else the legacy $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub,
// else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. A
// leading ~ and $VAR references are expanded, as huggingface_hub does.
func Dir() string { return dirFrom(os.Getenv) }

func dirFrom(getenv func(string) string) string {
	for _, k := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"} {
		if v := getenv(k); v != "" {
			return expandHome(v, getenv)
		}
	}
	if v := getenv("HF_HOME"); v != "" {
		return filepath.Join(expandHome(v, getenv), "hub")
	}
	if v := getenv("XDG_CACHE_HOME"); v != "" {
		return filepath.Join(expandHome(v, getenv), "huggingface", "hub")
	}
	return filepath.Join(expandHome("~", getenv), ".cache", "huggingface", "hub")
}

// expandHome expands a leading ~ and then $VAR references, as huggingface_hub
// does with expanduser and expandvars.
func expandHome(p string, getenv func(string) string) string {
	p = expandUser(p, getenv)
	return os.Expand(p, func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return "$" + k // expandvars leaves unknown variables as they are
	})
}

func expandUser(p string, getenv func(string) string) string {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p
	}
	home := getenv("HOME")
	if home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			home = h
		}
	}
	return filepath.Join(home, p[1:])
}

// idPart is what the Hub accepts as an organisation or repository name.
var idPart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// commitHash is a full commit hash, which names a snapshot directly.
var commitHash = regexp.MustCompile(`^[0-9a-f]{40}$`)

// IsID reports whether s has the form of a Hub model id, ORG/NAME. A bare NAME
// (the few legacy ids without an organisation) is not taken for one, so that a
// mistyped local directory is reported as such.
func IsID(s string) bool {
	org, name, ok := strings.Cut(s, "/")
	if !ok || !idPart.MatchString(org) || !idPart.MatchString(name) {
		return false
	}
	for _, p := range []string{org, name} {
		if strings.Contains(p, "--") || strings.Contains(p, "..") || strings.HasSuffix(p, ".") {
			return false
		}
	}
	return true
}

// RepoDir returns the directory of model id in cache dir.
func RepoDir(dir, id string) string {
	return filepath.Join(dir, "models--"+strings.ReplaceAll(id, "/", "--"))
}

// NotCachedError says that a model id or one of its revisions is not in the
// cache: where it looked, what was missing and how to download it. It matches
// ErrNotCached under errors.Is.
type NotCachedError struct {
	ID, Revision string
	Looked       []string // the paths looked at, in order
	Why          string   // what was missing, when more than the repository
}

func (e *NotCachedError) Error() string {
	what := e.ID
	if e.Revision != "" && e.Revision != DefaultRevision {
		what += " at revision " + e.Revision
	}
	msg := what + " is not in the local Hugging Face cache (looked at " + strings.Join(e.Looked, ", ") + ")"
	if e.Why != "" {
		msg += ": " + e.Why
	}
	how := "hf download " + e.ID
	if e.Revision != "" && e.Revision != DefaultRevision {
		how += " --revision " + e.Revision
	}
	return msg + "; download it with: " + how
}

// Is makes errors.Is(err, ErrNotCached) hold.
func (e *NotCachedError) Is(target error) bool { return target == ErrNotCached }

// Cache is a hub cache directory.
type Cache struct {
	Dir string
}

// Snapshot returns the snapshot directory of model id at revision (a branch,
// a tag, refs/pr/N or a full commit hash; "" is main), following
// refs/<revision> to snapshots/<commit>/ as huggingface_hub does offline.
func (c Cache) Snapshot(id, revision string) (string, error) {
	if revision == "" {
		revision = DefaultRevision
	}
	if !validRevision(revision) {
		return "", fmt.Errorf("%s: %w: %q", id, ErrRevision, revision)
	}
	repo := RepoDir(c.Dir, id)
	nc := &NotCachedError{ID: id, Revision: revision, Looked: []string{repo}}
	if st, err := os.Stat(repo); err != nil || !st.IsDir() {
		return "", nc
	}
	commit := revision
	if !commitHash.MatchString(revision) {
		ref := filepath.Join(repo, "refs", filepath.FromSlash(revision))
		nc.Looked = []string{ref}
		b, err := os.ReadFile(ref)
		if err != nil {
			nc.Why = "no ref " + revision + known(repo)
			return "", nc
		}
		commit = strings.TrimSpace(string(b))
		if !commitHash.MatchString(commit) {
			return "", fmt.Errorf("%s: %w: %s holds %q, not a commit hash", id, ErrRevision, ref, commit)
		}
	}
	snap := filepath.Join(repo, "snapshots", commit)
	nc.Looked = append(nc.Looked, snap)
	if st, err := os.Stat(snap); err != nil || !st.IsDir() {
		nc.Why = "revision " + revision + " is commit " + commit + ", whose snapshot is missing"
		if revision == commit {
			nc.Why = "no snapshot of commit " + commit
		}
		return "", nc
	}
	return snap, nil
}

// validRevision refuses revisions that would leave refs/ ("..", absolute).
func validRevision(r string) bool {
	if strings.HasPrefix(r, "/") || strings.Contains(r, "\\") {
		return false
	}
	for _, p := range strings.Split(r, "/") {
		if p == "" || p == "." || p == ".." {
			return false
		}
	}
	return true
}

// known lists the revisions the cache holds refs for, for an error message.
func known(repo string) string {
	var refs []string
	root := filepath.Join(repo, "refs")
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if rel, err := filepath.Rel(root, p); err == nil {
				refs = append(refs, filepath.ToSlash(rel))
			}
		}
		return nil
	})
	if len(refs) == 0 {
		return " (the cache holds no refs for it)"
	}
	return " (cached refs: " + strings.Join(refs, ", ") + ")"
}

// Locate returns the local path that arg names: arg itself when it exists (a
// local path always wins), else the snapshot of the model id arg in the cache
// at Dir(), at revision. A revision with a local path is an error, as is an
// arg that is neither.
func Locate(arg, revision string) (string, error) {
	return Cache{Dir: Dir()}.Locate(arg, revision)
}

// Locate is the package's Locate over cache c.
func (c Cache) Locate(arg, revision string) (string, error) {
	_, statErr := os.Stat(arg)
	if statErr == nil {
		if revision != "" {
			return "", fmt.Errorf("%s: %w: %q applies to a model id in the Hugging Face cache, and this is a local path", arg, ErrRevision, revision)
		}
		return arg, nil
	}
	if !IsID(arg) {
		if revision != "" {
			return "", fmt.Errorf("%s: %w: %q applies to a model id (ORG/NAME), and this is neither an id nor an existing path", arg, ErrRevision, revision)
		}
		return arg, nil // the caller reports the missing path as it does any
	}
	snap, err := c.Snapshot(arg, revision)
	var nc *NotCachedError
	if errors.As(err, &nc) {
		abs, _ := filepath.Abs(arg)
		nc.Looked = append([]string{abs}, nc.Looked...)
	}
	if err != nil {
		return "", err
	}
	return snap, nil
}
