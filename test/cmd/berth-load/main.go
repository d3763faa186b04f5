// Command berth-load is the load generator of the blue/green tests: it
// runs inside a test node and asks URLs over and over until a stop file
// appears, half of its workers over kept-alive connections, half over a
// new connection per request, and prints a JSON report: requests,
// failures (with the first few errors), who answered (the first word of
// each body) and, per answer, when it was first and last seen.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type seen struct {
	Count       int       `json:"count"`
	First, Last time.Time `json:"-"`
	FirstMS     int64     `json:"firstMs"`
	LastMS      int64     `json:"lastMs"`
}

type report struct {
	Requests int              `json:"requests"`
	Failures int              `json:"failures"`
	Errors   []string         `json:"errors,omitempty"`
	ByURL    map[string]int   `json:"byUrl"`
	Answers  map[string]*seen `json:"answers"`
	Seconds  float64          `json:"seconds"`
}

func main() {
	var urls multi
	flag.Var(&urls, "url", "a URL to ask (repeatable)")
	stop := flag.String("stop", "", "stop once this file exists")
	workers := flag.Int("workers", 4, "workers per URL and connection kind")
	flag.Parse()
	if len(urls) == 0 || *stop == "" {
		fmt.Fprintln(os.Stderr, "usage: berth-load -url URL... -stop FILE")
		os.Exit(2)
	}
	start := time.Now()
	var mu sync.Mutex
	rep := report{ByURL: map[string]int{}, Answers: map[string]*seen{}}
	record := func(url, answer string, err error) {
		mu.Lock()
		defer mu.Unlock()
		rep.Requests++
		rep.ByURL[url]++
		if err != nil {
			rep.Failures++
			if len(rep.Errors) < 20 {
				rep.Errors = append(rep.Errors, fmt.Sprintf("%s %s: %v", time.Since(start).Round(time.Millisecond), url, err))
			}
			return
		}
		s := rep.Answers[answer]
		now := time.Now()
		if s == nil {
			s = &seen{First: now}
			rep.Answers[answer] = s
		}
		s.Count++
		s.Last = now
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, url := range urls {
		for _, keepAlive := range []bool{true, false} {
			for i := 0; i < *workers; i++ {
				wg.Add(1)
				go func(url string, keepAlive bool) {
					defer wg.Done()
					c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1}}
					for {
						select {
						case <-done:
							return
						default:
						}
						answer, err := ask(c, url)
						record(url, answer, err)
					}
				}(url, keepAlive)
			}
		}
	}
	for {
		if _, err := os.Stat(*stop); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(done)
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	for _, s := range rep.Answers {
		s.FirstMS, s.LastMS = s.First.Sub(start).Milliseconds(), s.Last.Sub(start).Milliseconds()
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		os.Exit(1)
	}
}

// ask GETs url and answers the body's first word ("blue-web-xyz" → as is).
func ask(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "", fmt.Errorf("empty body")
	}
	return f[0], nil
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
