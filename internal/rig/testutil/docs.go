package testutil

import (
	"os"
	"regexp"
	"testing"
)

// DocBlock returns the fenced code block that follows the comment
// <!-- e2e: name --> in the Markdown file at path, so that a test applies
// an example exactly as the documentation shows it.
func DocBlock(t testing.TB, path, name string) string {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	block := regexp.MustCompile("(?s)<!-- e2e: " + regexp.QuoteMeta(name) + " -->\\s*```[a-z]*\\n(.*?)```")
	m := block.FindSubmatch(doc)
	if m == nil {
		t.Fatalf("%s has no block marked <!-- e2e: %s -->", path, name)
	}
	return string(m[1])
}
