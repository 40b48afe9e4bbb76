// Package config owns kvproxy's configuration: the one struct every setting
// lives in, its defaults, and how a value is found — a YAML file, KVPROXY_*
// environment variables and command-line flags, in that order of increasing
// precedence — and validated before anything listens.
//
// Each setting is declared once, as a field with a `yaml` key and a `desc`
// text. Its flag and environment names are derived from the key, so they
// cannot drift apart: kv.driver is --kv-driver and KVPROXY_KV_DRIVER.
package config
