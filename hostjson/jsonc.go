package hostjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// The Functions host reads host.json with Json.NET, which accepts // and /* */
// comments and trailing commas (the Durable Functions documentation's own
// examples have trailing commas). encoding/json accepts neither, so
// stripJSONC blanks them out first, byte for byte, so that every offset
// in the cleaned text is the same as in the file and positions in messages
// point at the file.

// stripJSONC returns a copy of src with comments and trailing commas
// replaced by spaces (newlines inside block comments are kept). Text inside
// strings is never touched. It fails only on an unterminated block comment;
// every other syntax error is left to the JSON decoder.
func stripJSONC(src []byte) ([]byte, error) {
	out := bytes.Clone(src)
	inString := false
	for i := 0; i < len(out); i++ {
		c := out[i]
		if inString {
			switch c {
			case '\\':
				i++ // skip the escaped byte, which may be a quote
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '/':
			if i+1 >= len(out) {
				continue
			}
			switch out[i+1] {
			case '/':
				j := i
				for j < len(out) && out[j] != '\n' && out[j] != '\r' {
					out[j] = ' '
					j++
				}
				i = j - 1
			case '*':
				end := bytes.Index(out[i+2:], []byte("*/"))
				if end < 0 {
					return nil, &syntaxError{offset: i, msg: "block comment /* is never closed"}
				}
				end += i + 2 + 2
				for j := i; j < end; j++ {
					if out[j] != '\n' && out[j] != '\r' {
						out[j] = ' '
					}
				}
				i = end - 1
			}
		case '}', ']':
			blankTrailingComma(out, i)
		}
	}
	return out, nil
}

// blankTrailingComma blanks a comma that stands (across white space) right
// before the closing bracket at close, when a value precedes it: "[1,]"
// becomes "[1 ]", while "[,]" stays an error for the decoder to report.
func blankTrailingComma(out []byte, close int) {
	j := prevNonSpace(out, close-1)
	if j < 0 || out[j] != ',' {
		return
	}
	if k := prevNonSpace(out, j-1); k < 0 || out[k] == ',' || out[k] == '[' || out[k] == '{' || out[k] == ':' {
		return
	}
	out[j] = ' '
}

func prevNonSpace(b []byte, i int) int {
	for ; i >= 0; i-- {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
		default:
			return i
		}
	}
	return -1
}

// syntaxError is malformed JSON at a byte offset of the file.
type syntaxError struct {
	offset int
	msg    string
}

func (e *syntaxError) Error() string { return e.msg }

// kind is the JSON type of a node.
type kind int

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func (k kind) String() string {
	return [...]string{"null", "a boolean", "a number", "a string", "an array", "an object"}[k]
}

// node is a parsed JSON value that remembers where it starts in the file
// and keeps object members in file order, duplicates included.
type node struct {
	kind    kind
	offset  int
	boolean bool
	number  json.Number
	str     string
	members []member // kindObject
	elems   []*node  // kindArray
}

type member struct {
	key       string
	keyOffset int
	value     *node
}

// parseTree decodes one JSON value from clean (the output of stripJSONC).
func parseTree(clean []byte) (*node, error) {
	// Validate the whole text first: json.Unmarshal reports a syntax error
	// at the absolute offset of the bad byte, which the token stream below
	// does not do for errors inside a literal or a string.
	var scratch any
	if err := json.Unmarshal(clean, &scratch); err != nil {
		var se *json.SyntaxError
		if !errors.As(err, &se) {
			return nil, &syntaxError{offset: 0, msg: err.Error()}
		}
		// Offset counts the bytes read up to and including the bad one; at
		// the end of the input it is the input's length.
		offset := int(se.Offset) - 1
		if int(se.Offset) >= len(clean) && strings.Contains(se.Error(), "end of JSON input") {
			offset = len(clean)
		}
		return nil, &syntaxError{offset: max(offset, 0), msg: se.Error()}
	}
	p := &treeParser{src: clean, dec: json.NewDecoder(bytes.NewReader(clean))}
	p.dec.UseNumber()
	root, err := p.value()
	if err != nil {
		return nil, err
	}
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, &syntaxError{offset: p.next(), msg: "unexpected text after the top-level JSON value"}
	}
	return root, nil
}

type treeParser struct {
	src []byte
	dec *json.Decoder
}

// next returns the offset where the decoder's next token starts: past white
// space and the ':' or ',' it has not consumed yet.
func (p *treeParser) next() int {
	i := int(p.dec.InputOffset())
	skip := func() {
		for i < len(p.src) && (p.src[i] == ' ' || p.src[i] == '\t' || p.src[i] == '\n' || p.src[i] == '\r') {
			i++
		}
	}
	skip()
	if i < len(p.src) && (p.src[i] == ':' || p.src[i] == ',') {
		i++
		skip()
	}
	return i
}

func (p *treeParser) token() (json.Token, int, error) {
	at := p.next()
	tok, err := p.dec.Token()
	if err != nil {
		// Unreachable after the validation in parseTree; kept as a guard.
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, at, &syntaxError{offset: len(p.src), msg: "unexpected end of JSON input"}
		}
		return nil, at, &syntaxError{offset: at, msg: err.Error()}
	}
	return tok, at, nil
}

func (p *treeParser) value() (*node, error) {
	tok, at, err := p.token()
	if err != nil {
		return nil, err
	}
	return p.valueFrom(tok, at)
}

func (p *treeParser) valueFrom(tok json.Token, at int) (*node, error) {
	n := &node{offset: at}
	switch t := tok.(type) {
	case nil:
		n.kind = kindNull
	case bool:
		n.kind, n.boolean = kindBool, t
	case json.Number:
		n.kind, n.number = kindNumber, t
	case string:
		n.kind, n.str = kindString, t
	case json.Delim:
		switch t {
		case '{':
			n.kind = kindObject
			for p.dec.More() {
				keyTok, keyAt, err := p.token()
				if err != nil {
					return nil, err
				}
				key, ok := keyTok.(string)
				if !ok { // the decoder reports a non-string key itself; be safe
					return nil, &syntaxError{offset: keyAt, msg: "object key is not a string"}
				}
				v, err := p.value()
				if err != nil {
					return nil, err
				}
				n.members = append(n.members, member{key: key, keyOffset: keyAt, value: v})
			}
		case '[':
			n.kind = kindArray
			for p.dec.More() {
				v, err := p.value()
				if err != nil {
					return nil, err
				}
				n.elems = append(n.elems, v)
			}
		default:
			return nil, &syntaxError{offset: at, msg: fmt.Sprintf("unexpected %q", rune(t))}
		}
		if _, _, err := p.token(); err != nil { // the closing } or ]
			return nil, err
		}
	}
	return n, nil
}

// lineCol turns a byte offset of src into a 1-based line and a 1-based
// column counted in characters.
func lineCol(src []byte, offset int) (line, col int) {
	offset = min(max(offset, 0), len(src))
	line = 1 + bytes.Count(src[:offset], []byte("\n"))
	start := bytes.LastIndexByte(src[:offset], '\n') + 1
	return line, utf8.RuneCount(src[start:offset]) + 1
}
