package candidates

import (
	"fmt"
	"sort"
	"strings"
)

// inference is an inferred error value and its grounds.
type inference struct {
	value int64
	conf  Confidence
	why   string // the rule that chose value
}

// infer chooses the error value of a function from what its callers
// test (ev) and what its return paths return (rs). The rules, first
// match wins, each say in why what they rest on:
//
//  1. Callers compare with a constant the function returns: that one
//     (negative: high; else medium, it may be the success value).
//  2. Callers test the sign: the most common negative constant
//     returned (high), else -1 by convention (low).
//  3. Callers test for zero: a negative constant beside 0 is the C_ERR
//     pattern (high); 0 beside computed values is a NULL-returning
//     pointer function (high when tested as 64-bit); 0 beside positive
//     constants is a boolean (low: which side is the error is a guess).
//  4. Weaker tests (masks, ordered compares, compares with variables):
//     a negative constant returned, low.
//
// Otherwise there is no inference and the function is not offered.
func infer(ev *CallerEvidence, rs *ReturnSummary) (inference, bool) {
	if ev.Checked() == 0 && ev.WeakChecked() > 0 {
		// Only setcc/cmov uses: the same rules, but the caller may be
		// computing a value rather than handling an error.
		inf, ok := inferFrom(ev.Weak, rs)
		inf.conf = Low
		inf.why += " (callers only use the test in setcc/cmov, no branch)"
		return inf, ok
	}
	return inferFrom(ev, rs)
}

func inferFrom(ev *CallerEvidence, rs *ReturnSummary) (inference, bool) {
	if inf, ok := inferEqual(ev, rs); ok {
		return inf, true
	}
	neg, hasNeg := mostNegative(rs)
	switch {
	case ev.Sign > 0 && hasNeg:
		return inference{neg, High, fmt.Sprintf("callers test the sign; %d is the most common negative constant returned", neg)}, true
	case ev.Sign > 0:
		return inference{-1, Low, "callers test the sign but no negative constant is returned: -1 by convention"}, true
	case ev.Zero > 0:
		return inferZero(ev, rs, neg, hasNeg)
	case hasNeg:
		return inference{neg, Low, fmt.Sprintf("callers only mask or order-compare the result; %d is the most common negative constant returned", neg)}, true
	}
	return inference{}, false
}

// inferEqual applies rule 1: the constants callers compare with, most
// compared first.
func inferEqual(ev *CallerEvidence, rs *ReturnSummary) (inference, bool) {
	cs := sortedEqual(ev)
	for _, c := range cs {
		if rs.count(c) == 0 {
			continue
		}
		// High only for a negative value that most comparing callers
		// single out: lua_type's callers compare with a dozen type
		// codes, and its -1 is one among them.
		conf := Medium
		if c < 0 && ev.Equal[c]*2 >= ev.EqualTotal() {
			conf = High
		}
		return inference{c, conf, fmt.Sprintf("callers compare with %d and the function returns it", c)}, true
	}
	if len(cs) > 0 && cs[0] < 0 && ev.Sign == 0 && ev.Zero == 0 {
		c := cs[0]
		return inference{c, Medium, fmt.Sprintf("callers compare with %d, though no return path returns it as a constant", c)}, true
	}
	return inference{}, false
}

// inferZero applies rule 3, for callers that test for zero / nonzero.
func inferZero(ev *CallerEvidence, rs *ReturnSummary, neg int64, hasNeg bool) (inference, bool) {
	zero := rs.count(0)
	wide := ev.Wide*2 >= ev.Checked()
	positive := rs.constPaths() - zero - negativePaths(rs)
	other := rs.Computed + rs.Callee
	switch {
	case hasNeg && zero > 0:
		return inference{neg, High, fmt.Sprintf("returns 0 or %d and callers test for zero: %d is the error", neg, neg)}, true
	case hasNeg:
		return inference{neg, Medium, fmt.Sprintf("callers test for zero; %d is the most common negative constant returned", neg)}, true
	case zero > 0 && positive == 0 && other > 0 && rs.Arith > 0:
		// A difference or a count (strcmp, a length): 0 is a result
		// like any other.
		return inference{0, Low, "returns 0 where other paths compute a number arithmetically (a comparison? a count?), and callers test for zero: 0 taken as failure, a guess"}, true
	case zero > 0 && positive == 0 && other > 0:
		conf := Medium
		if wide {
			conf = High
		}
		return inference{0, conf, "returns 0 where other paths compute a value, and callers test for zero: NULL/0 is the error" + wideNote(wide)}, true
	case zero > 0 && positive > 0:
		return inference{0, Low, "returns 0 or positive constants (a boolean?) and callers test for zero: 0 taken as failure, a guess"}, true
	case wide:
		return inference{0, Low, "callers test the 64-bit result for zero (a pointer?) though no path returns 0 as a constant"}, true
	}
	return inference{}, false
}

func wideNote(wide bool) string {
	if wide {
		return " (tested as a 64-bit register: a pointer)"
	}
	return ""
}

// mostNegative returns the negative constant returned on the most paths,
// the one nearest zero on a tie (-1 before -22).
func mostNegative(rs *ReturnSummary) (int64, bool) {
	best, paths := int64(0), 0
	for _, c := range rs.constants() {
		if c.Value >= 0 {
			continue
		}
		if c.Paths > paths || (c.Paths == paths && c.Value > best) {
			best, paths = c.Value, c.Paths
		}
	}
	return best, paths > 0
}

func negativePaths(rs *ReturnSummary) int {
	n := 0
	for _, c := range rs.constants() {
		if c.Value < 0 {
			n += c.Paths
		}
	}
	return n
}

// sortedEqual returns the constants callers compare with, most compared
// first, then by value.
func sortedEqual(ev *CallerEvidence) []int64 {
	cs := make([]int64, 0, len(ev.Equal))
	for c := range ev.Equal {
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool {
		if ev.Equal[cs[i]] != ev.Equal[cs[j]] {
			return ev.Equal[cs[i]] > ev.Equal[cs[j]]
		}
		return cs[i] < cs[j]
	})
	return cs
}

// evidenceText is the ReturnEvidence of a candidate: the rule, then the
// return paths, then the callers, in numbers.
func evidenceText(inf inference, ev *CallerEvidence, rs *ReturnSummary) string {
	return inf.why + "; " + returnsText(inf.value, rs) + "; " + callersText(ev)
}

// returnsText describes the return paths: "returns -1 on 3 of 5 return
// paths (also 0 on 2)".
func returnsText(v int64, rs *ReturnSummary) string {
	var b strings.Builder
	if len(rs.Const) == 0 && len(rs.ViaCallee) > 0 {
		fmt.Fprintf(&b, "returns no constant itself but passes on its callees' results, which are %d on %d return paths", v, countOf(rs.ViaCallee, v))
	} else {
		fmt.Fprintf(&b, "returns %d on %d of %d return paths", v, countOf(rs.Const, v), rs.Paths)
	}
	var also []string
	for _, c := range rs.Const {
		if c.Value != v && len(also) < 4 {
			also = append(also, fmt.Sprintf("%d on %d", c.Value, c.Paths))
		}
	}
	for _, k := range []struct {
		n    int
		what string
	}{{rs.Computed, "computed"}, {rs.Callee, "a callee's result"}, {rs.Unset, "unset"}, {rs.Unknown, "untraced"}} {
		if k.n > 0 {
			also = append(also, fmt.Sprintf("%s on %d", k.what, k.n))
		}
	}
	if len(also) > 0 {
		fmt.Fprintf(&b, " (also %s)", strings.Join(also, ", "))
	}
	return b.String()
}

// callersText describes the call sites: "7 of 9 call sites branch on
// the result (4 compare with -1, 3 test for zero)".
func callersText(ev *CallerEvidence) string {
	var parts []string
	for _, c := range sortedEqual(ev) {
		parts = append(parts, fmt.Sprintf("%d compare with %d", ev.Equal[c], c))
	}
	for _, k := range []struct {
		n    int
		what string
	}{{ev.Zero, "test for zero"}, {ev.Sign, "test the sign"}, {ev.Order, "order-compare"}, {ev.Var, "compare with a variable"}, {ev.Mask, "test bits"}} {
		if k.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", k.n, k.what))
		}
	}
	s := fmt.Sprintf("%d of %d call sites branch on the result (%s)", ev.Checked(), ev.Sites, strings.Join(parts, ", "))
	if ev.External > 0 {
		s += fmt.Sprintf(", %d of the sites in other files", ev.External)
	}
	if n := ev.WeakChecked(); n > 0 {
		s += fmt.Sprintf(", %d more test it for a setcc/cmov", n)
	}
	return s
}
