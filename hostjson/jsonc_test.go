package hostjson

import (
	"errors"
	"testing"
)

func TestStripJSONC(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain JSON is untouched", `{"a": [1, 2]}`, `{"a": [1, 2]}`},
		{"line comment", "{\"a\": 1 // one\n}", "{\"a\": 1       \n}"},
		{"line comment before CRLF", "{\"a\": 1 //x\r\n}", "{\"a\": 1    \r\n}"},
		{"line comment at the end", "{}//", "{}  "},
		{"block comment", `{/* c */"a": 1}`, `{       "a": 1}`},
		{"block comment keeps newlines", "{/* a\nb */}", "{    \n    }"},
		{"comment markers inside strings", `{"u": "http://x/*y*/"}`, `{"u": "http://x/*y*/"}`},
		{"escaped quote inside a string", `{"q": "a\"//b"}`, `{"q": "a\"//b"}`},
		{"escaped backslash ends the string", `{"q": "a\\"//c` + "\n}", `{"q": "a\\"   ` + "\n}"},
		{"trailing comma in an object", `{"a": 1,}`, `{"a": 1 }`},
		{"trailing comma in an array", `[1, 2, ]`, `[1, 2  ]`},
		{"trailing comma before a comment", "{\"a\": 1, // c\n}", "{\"a\": 1      \n}"},
		{"nested trailing commas", `{"a": {"b": [1,],},}`, `{"a": {"b": [1 ] } }`},
		{"a lone comma stays for the decoder", `[,]`, `[,]`},
		{"a double comma stays for the decoder", `[1,,]`, `[1,,]`},
		{"a comma after a colon stays", `{"a":,}`, `{"a":,}`},
		{"a comma inside a string is not trailing", `{"a": ",}"}`, `{"a": ",}"}`},
		{"a lone slash stays for the decoder", `{"a": 1 / 2}`, `{"a": 1 / 2}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := stripJSONC([]byte(tt.in))
			if err != nil {
				t.Fatalf("stripJSONC(%q): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Errorf("stripJSONC(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if len(got) != len(tt.in) {
				t.Errorf("length changed from %d to %d: offsets would no longer match the file", len(tt.in), len(got))
			}
		})
	}
}

func TestStripJSONCUnclosedComment(t *testing.T) {
	_, err := stripJSONC([]byte("{\n  /* never closed\n}"))
	var se *syntaxError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want a *syntaxError", err)
	}
	if se.offset != 4 {
		t.Errorf("offset = %d, want 4 (the /*)", se.offset)
	}
}

func TestParseTreeKeepsOrderDuplicatesAndOffsets(t *testing.T) {
	src := []byte("{\"b\": 1, \"a\": {\"x\": [true, null]}, \"b\": \"two\"}")
	root, err := parseTree(src)
	if err != nil {
		t.Fatal(err)
	}
	if root.kind != kindObject || len(root.members) != 3 {
		t.Fatalf("root = %+v, want an object of 3 members", root)
	}
	wantKeys := []string{"b", "a", "b"}
	wantKeyOffsets := []int{1, 9, 35}
	for i, m := range root.members {
		if m.key != wantKeys[i] || m.keyOffset != wantKeyOffsets[i] {
			t.Errorf("member %d = %q at %d, want %q at %d", i, m.key, m.keyOffset, wantKeys[i], wantKeyOffsets[i])
		}
		if src[m.value.offset] == ' ' {
			t.Errorf("member %q: value offset %d points at a space", m.key, m.value.offset)
		}
	}
	if got := root.members[0].value; got.kind != kindNumber || got.number != "1" || got.offset != 6 {
		t.Errorf("b = %+v, want the number 1 at 6", got)
	}
	arr := root.members[1].value.members[0].value
	if arr.kind != kindArray || len(arr.elems) != 2 || arr.elems[0].kind != kindBool || !arr.elems[0].boolean || arr.elems[1].kind != kindNull {
		t.Errorf("a.x = %+v, want [true, null]", arr)
	}
	if got := root.members[2].value; got.kind != kindString || got.str != "two" || got.offset != 40 {
		t.Errorf("second b = %+v, want the string two at 40", got)
	}
}

func TestLineCol(t *testing.T) {
	src := []byte("ab\ncdé\nf")
	tests := []struct {
		offset, line, col int
	}{
		{0, 1, 1},
		{1, 1, 2},
		{2, 1, 3}, // the newline itself
		{3, 2, 1},
		{5, 2, 3}, // the é, two bytes
		{7, 2, 4}, // after the é: one character on
		{8, 3, 1},
		{9, 3, 2},  // end of input
		{99, 3, 2}, // clamped
		{-1, 1, 1}, // clamped
	}
	for _, tt := range tests {
		line, col := lineCol(src, tt.offset)
		if line != tt.line || col != tt.col {
			t.Errorf("lineCol(%d) = %d:%d, want %d:%d", tt.offset, line, col, tt.line, tt.col)
		}
	}
}
