package httpapi_test

import (
	"log"
	"net/http"
	"os"
	"time"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/httpapi"
)

// The API mounted in a service's own server next to its other routes,
// behind a proxy that serves it as https://ops.example.com.
func ExampleNew() {
	var w *taskhub.Worker // the service's started worker

	mux := http.NewServeMux()
	mux.Handle(httpapi.BasePathDefault+"/", httpapi.New(w.Client(), httpapi.Options{
		Keys:          []string{os.Getenv("TASKHUB_API_KEY")},
		PublicBaseURL: func(*http.Request) string { return "https://ops.example.com" },
	}))
	srv := &http.Server{Addr: ":8080", Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
