package seccomp

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// A tiny label assembler on top of golang.org/x/net/bpf. Classic BPF has
// 8-bit conditional jump offsets and a 32-bit unconditional one (`ja`); the
// compiler only ever points conditional jumps at nearby labels (inside one
// rule, or the instruction after next in the search tree) and uses `ja` for
// everything that may be far, so resolve() can simply reject an offset that
// does not fit instead of relaxing jumps.

// label names a position in the program. fall is "the next instruction".
type label int

const fall label = -1

type item struct {
	ins    bpf.Instruction
	jt, jf label // for bpf.JumpIf
	ja     label // for bpf.Jump
}

type assembler struct {
	items  []item
	labels []int // label -> instruction index, -1 until set
}

func (a *assembler) newLabel() label {
	a.labels = append(a.labels, -1)
	return label(len(a.labels) - 1)
}

func (a *assembler) mark(l label) { a.labels[l] = len(a.items) }

func (a *assembler) emit(ins bpf.Instruction) {
	a.items = append(a.items, item{ins: ins, jt: fall, jf: fall, ja: fall})
}

func (a *assembler) ldAbs(off uint32) { a.emit(bpf.LoadAbsolute{Off: off, Size: 4}) }
func (a *assembler) and(v uint32)     { a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: v}) }
func (a *assembler) ret(v uint32)     { a.emit(bpf.RetConstant{Val: v}) }

// jmp emits "if A <cond> val goto t else goto f"; fall means the next instruction.
func (a *assembler) jmp(cond bpf.JumpTest, val uint32, t, f label) {
	a.items = append(a.items, item{ins: bpf.JumpIf{Cond: cond, Val: val}, jt: t, jf: f, ja: fall})
}

// ja emits an unconditional (32-bit offset) jump.
func (a *assembler) ja(l label) {
	a.items = append(a.items, item{ins: bpf.Jump{}, jt: fall, jf: fall, ja: l})
}

func (a *assembler) resolve() ([]bpf.Instruction, error) {
	out := make([]bpf.Instruction, len(a.items))
	skip := func(i int, l label) (int, error) {
		if l == fall {
			return 0, nil
		}
		pos := a.labels[l]
		if pos < 0 {
			return 0, fmt.Errorf("bpf: label %d never placed", l)
		}
		d := pos - (i + 1)
		if d < 0 {
			return 0, fmt.Errorf("bpf: backward jump at %d", i)
		}
		return d, nil
	}
	for i, it := range a.items {
		switch ins := it.ins.(type) {
		case bpf.JumpIf:
			t, err := skip(i, it.jt)
			if err != nil {
				return nil, err
			}
			f, err := skip(i, it.jf)
			if err != nil {
				return nil, err
			}
			if t > 255 || f > 255 {
				return nil, fmt.Errorf("bpf: conditional jump at %d too far (%d/%d)", i, t, f)
			}
			ins.SkipTrue, ins.SkipFalse = uint8(t), uint8(f)
			out[i] = ins
		case bpf.Jump:
			d, err := skip(i, it.ja)
			if err != nil {
				return nil, err
			}
			ins.Skip = uint32(d)
			out[i] = ins
		default:
			out[i] = it.ins
		}
	}
	return out, nil
}
