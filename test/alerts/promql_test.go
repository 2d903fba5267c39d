package alerts

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// selector is a metric name in a PromQL expression and its label
// matchers' text, without the braces.
type selector struct {
	Metric, Matchers string
}

// keywords are PromQL's words that are neither functions nor metrics.
var keywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true, "inf": true, "nan": true,
}

// aggregations may take their by or without clause before their
// parenthesis: sum by (a) (x).
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
	"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

// selectors lists the series an expression reads. It is no PromQL parser
// (the project module does not depend on Prometheus; promtool checks the
// syntax) but knows enough of the grammar to tell metric names from
// functions, label lists, strings, durations and Grafana's $variables.
func selectors(expr string) ([]selector, error) {
	var out []selector
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(expr, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '[':
			end, err := closing(expr, i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			return nil, fmt.Errorf("label matchers at %d with no metric name before them: %q", i, expr)
		case c == '$':
			i = skipVariable(expr, i)
		case isDigit(c) || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := skipSpace(expr, i)
			switch {
			case keywords[word]:
				// A label list: by (a, b), on (a), group_left (b).
				if word != "offset" && next < len(expr) && expr[next] == '(' {
					end, err := closing(expr, next, '(', ')')
					if err != nil {
						return nil, err
					}
					i = end
				}
			case aggregations[word] || next < len(expr) && expr[next] == '(':
				// A function or an aggregation; its arguments are scanned next.
			case next < len(expr) && expr[next] == '{':
				end, err := closing(expr, next, '{', '}')
				if err != nil {
					return nil, err
				}
				out = append(out, selector{word, strings.TrimSpace(expr[next+1 : end-1])})
				i = end
			default:
				out = append(out, selector{Metric: word})
			}
		default:
			i++
		}
	}
	return out, nil
}

// closing returns the index after the bracket that closes the one at i,
// skipping strings inside.
func closing(expr string, i int, open, shut byte) (int, error) {
	depth := 0
	for j := i; j < len(expr); {
		switch expr[j] {
		case '"', '\'', '`':
			end, err := skipString(expr, j)
			if err != nil {
				return 0, err
			}
			j = end
			continue
		case open:
			depth++
		case shut:
			depth--
			if depth == 0 {
				return j + 1, nil
			}
		}
		j++
	}
	return 0, fmt.Errorf("unclosed %c at %d: %q", open, i, expr)
}

func skipString(expr string, i int) (int, error) {
	quote := expr[i]
	for j := i + 1; j < len(expr); j++ {
		if expr[j] == '\\' && quote != '`' {
			j++
			continue
		}
		if expr[j] == quote {
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unclosed string at %d: %q", i, expr)
}

// skipVariable skips $name and ${name}.
func skipVariable(expr string, i int) int {
	i++
	if i < len(expr) && expr[i] == '{' {
		if end := strings.IndexByte(expr[i:], '}'); end >= 0 {
			return i + end + 1
		}
	}
	for i < len(expr) && isIdent(expr[i]) {
		i++
	}
	return i
}

func skipSpace(expr string, i int) int {
	for i < len(expr) && strings.IndexByte(" \t\r\n", expr[i]) >= 0 {
		i++
	}
	return i
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c == ':' || c|0x20 >= 'a' && c|0x20 <= 'z' }
func isIdent(c byte) bool      { return isIdentStart(c) || isDigit(c) }

func TestSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []selector
	}{
		{"up", []selector{{Metric: "up"}}},
		{`sum by (namespace, cluster) (rate(a_total{kind="Failover", x=~"a{1}"}[5m] offset 1h)) > 3`,
			[]selector{{"a_total", `kind="Failover", x=~"a{1}"`}}},
		{`max(b{namespace="$namespace"}) / on (pod) group_left (volume) c unless d offset 5m and bool e`,
			[]selector{{"b", `namespace="$namespace"`}, {Metric: "c"}, {Metric: "d"}, {Metric: "e"}}},
		{`histogram_quantile(0.99, sum(rate(h_bucket[$__rate_interval])) without (pod)) * 1e3 - time()`,
			[]selector{{Metric: "h_bucket"}}},
		{`label_replace(f, "dst", "$1", "src", "(by)") or g{a='}'}`,
			[]selector{{Metric: "f"}, {"g", `a='}'`}}},
		{`2 * 64 * 1024 - inf`, nil},
	} {
		got, err := selectors(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("selectors(%s) = %v, want %v", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `rate(x[5m)`, `x{a="b}`} {
		if got, err := selectors(bad); err == nil {
			t.Errorf("selectors(%s) = %v, want an error", bad, got)
		}
	}
}
