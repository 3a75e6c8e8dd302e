// Puts and gets 64-byte items and prints the round trips per second:
//
//	clients/go/run.sh example 127.0.0.1:2229 5
package main

import (
	"bytes"
	"fmt"
	"log"
	"os"
	"strconv"
	"time"

	kestrelclient "kestrel/clients/go"
)

func main() {
	server, seconds := "127.0.0.1:2229", 5.0
	if len(os.Args) > 1 {
		server = os.Args[1]
	}
	if len(os.Args) > 2 {
		var err error
		if seconds, err = strconv.ParseFloat(os.Args[2], 64); err != nil {
			log.Fatal(err)
		}
	}
	client, err := kestrelclient.New([]string{server}, kestrelclient.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	if err := client.Flush("client_roundtrip"); err != nil {
		log.Fatal(err)
	}
	item := bytes.Repeat([]byte("x"), 64)
	start := time.Now()
	n := 0
	for time.Since(start).Seconds() < seconds {
		if _, err := client.Put("client_roundtrip", [][]byte{item}, 0); err != nil {
			log.Fatal(err)
		}
		got, err := client.Get("client_roundtrip", 1, 0)
		if err != nil || len(got) != 1 {
			log.Fatalf("item missing: %v", err)
		}
		n++
	}
	rate := float64(n) / time.Since(start).Seconds()
	fmt.Printf("go client: %d round trips (put + get, 64 B) in %.0f s: %.0f round trips/s\n", n, seconds, rate)
}
