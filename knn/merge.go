package knn

import (
	"cmp"
	"slices"
)

// Merge combines two partial lists of one query row into the best k, by (Dist, Pos). It is
// associative, commutative and deterministic; entries with the same Pos appear once (the one
// first in the order below is kept). The inputs need not be sorted and are not modified.
//
// The order is (Dist asc with NaN last, Pos asc), then, only to make the result well defined
// should two entries for the same Pos ever disagree, Cross, Dmm, ID and SameCaption.
func Merge(x, y []Neighbour, k int) []Neighbour {
	if k < 1 {
		return []Neighbour{}
	}
	all := make([]Neighbour, 0, len(x)+len(y))
	all = append(all, x...)
	all = append(all, y...)
	slices.SortFunc(all, compareNeighbour)
	out := all[:0]
	for _, nb := range all {
		if len(out) == k {
			break
		}
		if !containsPos(out, nb.Pos) {
			out = append(out, nb)
		}
	}
	return slices.Clip(out)
}

func containsPos(ns []Neighbour, pos int64) bool {
	for i := range ns {
		if ns[i].Pos == pos {
			return true
		}
	}
	return false
}

func compareNeighbour(a, b Neighbour) int {
	if c := cmpDist(a.Dist, b.Dist); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Pos, b.Pos); c != 0 {
		return c
	}
	if c := cmpDist(a.Cross, b.Cross); c != 0 {
		return c
	}
	if c := cmpDist(a.Dmm, b.Dmm); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ID, b.ID); c != 0 {
		return c
	}
	switch {
	case a.SameCaption == b.SameCaption:
		return 0
	case !a.SameCaption:
		return -1
	}
	return 1
}

// MergeLists merges two Lists of the same query block row by row (Merge on every row's image
// and text lists). It panics if the row counts differ.
func MergeLists(x, y Lists, k int) Lists {
	if len(x.Image) != len(y.Image) || len(x.Text) != len(y.Text) {
		panic("knn: MergeLists: row counts differ")
	}
	out := Lists{Image: make([][]Neighbour, len(x.Image)), Text: make([][]Neighbour, len(x.Text))}
	for i := range x.Image {
		out.Image[i] = Merge(x.Image[i], y.Image[i], k)
	}
	for i := range x.Text {
		out.Text[i] = Merge(x.Text[i], y.Text[i], k)
	}
	return out
}
