module spdystreamclient

go 1.19

require github.com/moby/spdystream v0.2.0
