package partition

import "testing"

func TestOne(t *testing.T) {
	churn(t, 374)
}
