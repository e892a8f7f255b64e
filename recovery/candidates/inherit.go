package candidates

// maxInherit bounds how many wrappers deep constants are inherited
// (rdbLoad returns rdbLoadRio's result, which returns
// rdbLoadRioWithLoadingCtx's).
const maxInherit = 3

// inheritReturns fills ReturnSummary.ViaCallee: the constants that the
// callees a function returns the result of return themselves, so that a
// wrapper shows its helper's -1. Each callee's constants count once per
// return path that passes its result on.
func (a *analysis) inheritReturns() {
	for i := range a.funcs {
		if len(a.callees[i]) == 0 {
			continue
		}
		var via []ConstCount
		seen := map[int32]bool{int32(i): true}
		a.collect(a.callees[i], 1, seen, &via)
		sortCounts(via)
		a.rets[i].ViaCallee = via
	}
}

func (a *analysis) collect(callees []int32, depth int, seen map[int32]bool, via *[]ConstCount) {
	for _, j := range callees {
		if seen[j] {
			continue
		}
		seen[j] = true
		for _, c := range a.rets[j].Const {
			*via = addCount(*via, c.Value, c.Paths)
		}
		if depth < maxInherit {
			a.collect(a.callees[j], depth+1, seen, via)
		}
	}
}
