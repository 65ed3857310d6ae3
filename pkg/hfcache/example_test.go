package hfcache_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/nf4pipe/nf4pipe/pkg/hfcache"
)

// A model id resolves to its snapshot in the cache, through refs/main as
// huggingface_hub lays it out; an id that is not there is an error, never a
// download.
func ExampleCache_Locate() {
	dir, err := os.MkdirTemp("", "hub")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// What huggingface_hub leaves after downloading tiny-org/llama at main.
	const commit = "0123456789abcdef0123456789abcdef01234567"
	repo := hfcache.RepoDir(dir, "tiny-org/llama")
	snap := filepath.Join(repo, "snapshots", commit)
	for path, data := range map[string]string{
		filepath.Join(repo, "refs", "main"): commit,
		filepath.Join(snap, "config.json"):  `{"model_type": "llama"}`,
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			log.Fatal(err)
		}
	}

	c := hfcache.Cache{Dir: dir}
	path, err := c.Locate("tiny-org/llama", "")
	if err != nil {
		log.Fatal(err)
	}
	rel, _ := filepath.Rel(dir, path)
	fmt.Println(rel)
	_, err = c.Locate("tiny-org/mistral", "")
	fmt.Println(errors.Is(err, hfcache.ErrNotCached))
	fmt.Println(hfcache.IsID("tiny-org/llama"), hfcache.IsID("llama"))
	// Output:
	// models--tiny-org--llama/snapshots/0123456789abcdef0123456789abcdef01234567
	// true
	// true false
}
