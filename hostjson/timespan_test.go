package hostjson

import (
	"strings"
	"testing"
	"time"
)

func TestParseTimeSpan(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"00:05:00", 5 * time.Minute},
		{"00:00:30", 30 * time.Second},
		{"01:00:00", time.Hour},
		{"23:59:59", 23*time.Hour + 59*time.Minute + 59*time.Second},
		{"0:5:0", 5 * time.Minute},  // one-digit fields
		{"00:30", 30 * time.Minute}, // hh:mm, not mm:ss
		{"1.02:03:04", day + 2*time.Hour + 3*time.Minute + 4*time.Second},
		{"7.00:00:00", 7 * day},
		{"1.12:00", day + 12*time.Hour},                                   // d.hh:mm
		{"1:02:03:04", day + 2*time.Hour + 3*time.Minute + 4*time.Second}, // d:hh:mm:ss
		{"00:00:00.5", 500 * time.Millisecond},
		{"00:00:01.25", 1250 * time.Millisecond},
		{"00:00:00.0000001", 100 * time.Nanosecond}, // one tick
		{"00:00:00.1234567", 123456700 * time.Nanosecond},
		{"1:00:00:00.5", day + 500*time.Millisecond},
		{"30", 30 * day}, // a bare number is days, as in .NET
		{"0", 0},
		{"  00:01:00\t", time.Minute}, // surrounding space
		{"-00:01:00", -time.Minute},
		{"106751.00:00:00", 106751 * day},
	}
	for _, tt := range tests {
		got, err := parseTimeSpan(tt.in)
		if err != nil {
			t.Errorf("parseTimeSpan(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("parseTimeSpan(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseTimeSpanErrors(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", "empty"},
		{"   ", "empty"},
		{"5 minutes", "hh:mm:ss"},
		{"PT5M", "hh:mm:ss"},
		{"1.5", "hh:mm:ss"},
		{"00:60:00", "minutes 60 out of range 0–59"},
		{"00:00:60", "seconds 60 out of range 0–59"},
		{"24:00:00", "hours 24 out of range 0–23"}, // .NET would read 24 days
		{"1.24:00:00", "hours 24 out of range"},
		{"00:00:00.12345678", "1 to 7 digits"},
		{"00:00:00.", "1 to 7 digits"},
		{"00:00:0x", `seconds "0x" is not a number`},
		{"aa:00:00", `hours "aa" is not a number`},
		{":00:00", "missing hours"},
		{"00::00", "missing minutes"},
		{"00:00:", "missing seconds"},
		{"1.:00:00", "missing hours"},
		{".01:00:00", "missing days"},
		{"1:2:3:4:5", "too many"},
		{"+00:01:00", `hours "+00" is not a number`},
		{"--00:01:00", `hours "-00" is not a number`},
		{"106752.00:00:00", "out of range"}, // past time.Duration
		{"10675199.00:00:00", "out of range"},
		{"106751.23:59:59", "too long"},
	}
	for _, tt := range tests {
		got, err := parseTimeSpan(tt.in)
		if err == nil {
			t.Errorf("parseTimeSpan(%q) = %v, want an error with %q", tt.in, got, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("parseTimeSpan(%q) error = %q, want it to contain %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestFormatTimeSpan(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "00:00:00"},
		{30 * time.Second, "00:00:30"},
		{time.Hour, "01:00:00"},
		{7 * 24 * time.Hour, "7.00:00:00"},
		{1500 * time.Millisecond, "00:00:01.5"},
		{100 * time.Nanosecond, "00:00:00.0000001"},
		{-time.Minute, "-00:01:00"},
	}
	for _, tt := range tests {
		got := formatTimeSpan(tt.in)
		if got != tt.want {
			t.Errorf("formatTimeSpan(%v) = %q, want %q", tt.in, got, tt.want)
		}
		// What is written must read back as the same duration.
		back, err := parseTimeSpan(got)
		if err != nil || back != tt.in {
			t.Errorf("parseTimeSpan(formatTimeSpan(%v)) = %v, %v", tt.in, back, err)
		}
	}
}
