package hostjson

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// timeSpanForm describes the accepted duration strings in error messages.
const timeSpanForm = `a .NET TimeSpan string: "hh:mm:ss" (e.g. "00:05:00"), "d.hh:mm:ss" (e.g. "1.02:00:00"), with optional fractional seconds ("00:00:00.5")`

// maxTimeSpanDays is the largest day count whose TimeSpan still fits a
// time.Duration (.NET allows 10675199 days; Go's Duration ends at about
// 106751 days).
const maxTimeSpanDays = int64(time.Duration(1<<63-1) / (24 * time.Hour))

// parseTimeSpan parses a duration in the invariant-culture forms that .NET's
// TimeSpan.Parse accepts, which is how the Functions host reads host.json
// durations:
//
//	[ws][-]{ d | [d.]hh:mm[:ss[.fffffff]] | d:hh:mm:ss[.fffffff] }[ws]
//
// Hours are 0–23, minutes and seconds 0–59, and the fraction has one to seven
// digits (100 ns ticks). A bare number is days, as in .NET: "30" is thirty
// days, and "00:30" is thirty minutes. Unlike .NET, an hour field of 24 or
// more ("24:00:00", which .NET reads as 24 days) is refused, because nobody
// writing it means days.
func parseTimeSpan(s string) (time.Duration, error) {
	t := strings.TrimFunc(s, unicode.IsSpace)
	if t == "" {
		return 0, errors.New("empty duration")
	}
	neg := false
	if t[0] == '-' {
		neg = true
		t = t[1:]
	}

	var days, hours, minutes, seconds int64
	var frac string
	parts := strings.Split(t, ":")
	switch len(parts) {
	case 1:
		// "d": days only.
		if strings.TrimLeft(t, "0123456789") != "" {
			return 0, errors.New(`expected the form hh:mm:ss`)
		}
		d, err := timeSpanField(parts[0], "days", maxTimeSpanDays)
		if err != nil {
			return 0, err
		}
		days = d
	case 2, 3:
		// "[d.]hh:mm[:ss[.f]]"
		first := parts[0]
		if i := strings.IndexByte(first, '.'); i >= 0 {
			d, err := timeSpanField(first[:i], "days", maxTimeSpanDays)
			if err != nil {
				return 0, err
			}
			days, first = d, first[i+1:]
		}
		var err error
		if hours, err = timeSpanHours(first); err != nil {
			return 0, err
		}
		if minutes, err = timeSpanField(parts[1], "minutes", 59); err != nil {
			return 0, err
		}
		if len(parts) == 3 {
			if seconds, frac, err = timeSpanSeconds(parts[2]); err != nil {
				return 0, err
			}
		}
	case 4:
		// "d:hh:mm:ss[.f]" (.NET's general short format).
		var err error
		if days, err = timeSpanField(parts[0], "days", maxTimeSpanDays); err != nil {
			return 0, err
		}
		if hours, err = timeSpanHours(parts[1]); err != nil {
			return 0, err
		}
		if minutes, err = timeSpanField(parts[2], "minutes", 59); err != nil {
			return 0, err
		}
		if seconds, frac, err = timeSpanSeconds(parts[3]); err != nil {
			return 0, err
		}
	default:
		return 0, fmt.Errorf("%q has too many ':' separators", s)
	}

	d := time.Duration(days)*24*time.Hour +
		time.Duration(hours)*time.Hour +
		time.Duration(minutes)*time.Minute +
		time.Duration(seconds)*time.Second
	if frac != "" {
		// Pad to seven digits: the fraction counts 100 ns ticks.
		ticks, _ := strconv.ParseInt(frac+strings.Repeat("0", 7-len(frac)), 10, 64)
		d += time.Duration(ticks) * 100
	}
	if d < 0 { // wrapped past the largest Duration
		return 0, fmt.Errorf("%q is too long", s)
	}
	if neg {
		d = -d
	}
	return d, nil
}

// timeSpanField parses one run of ASCII digits in [0, max].
func timeSpanField(s, name string, max int64) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("missing %s", name)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%s %q is not a number", name, s)
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v > max {
		return 0, fmt.Errorf("%s %s out of range 0–%d", name, s, max)
	}
	return v, nil
}

func timeSpanHours(s string) (int64, error) {
	h, err := timeSpanField(s, "hours", 1<<62)
	if err != nil {
		return 0, err
	}
	if h > 23 {
		return 0, fmt.Errorf("hours %s out of range 0–23 (write one day as 1.00:00:00)", s)
	}
	return h, nil
}

// timeSpanSeconds parses "ss[.fffffff]" and returns the fraction's digits.
func timeSpanSeconds(s string) (int64, string, error) {
	whole, frac, hasFrac := strings.Cut(s, ".")
	sec, err := timeSpanField(whole, "seconds", 59)
	if err != nil {
		return 0, "", err
	}
	if hasFrac {
		if frac == "" || len(frac) > 7 {
			return 0, "", fmt.Errorf("fraction of a second %q must have 1 to 7 digits", frac)
		}
		if _, err := timeSpanField(frac, "fraction of a second", 9999999); err != nil {
			return 0, "", err
		}
	}
	return sec, frac, nil
}

// formatTimeSpan writes d the way host.json spells durations ("hh:mm:ss",
// with a day part and a fraction when needed), for messages.
func formatTimeSpan(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	d -= m * time.Minute
	s := d / time.Second
	d -= s * time.Second
	out := fmt.Sprintf("%02d:%02d:%02d", h, m, s)
	if days > 0 {
		out = fmt.Sprintf("%d.%s", days, out)
	}
	if ticks := d / 100; ticks > 0 {
		out += strings.TrimRight(fmt.Sprintf(".%07d", ticks), "0")
	}
	return sign + out
}
