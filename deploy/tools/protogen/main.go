// Command protogen generates Go code for the Custos .proto files without protoc.
//
// It compiles the named .proto files with github.com/bufbuild/protocompile (pure Go), builds the
// same pluginpb.CodeGeneratorRequest protoc would send to a plugin, and runs protoc-gen-go's own
// generator (internal_gengo) in process. The versions of both are pinned in this module's go.mod,
// so the output is reproducible: running it twice gives byte-identical files, and
// `git diff --exit-code proto/` after a run detects stale generated code.
//
// Usage (from deploy/tools):
//
//	GOWORK=off go run ./protogen -I ../../proto -out ../../proto custos/v1/events.proto
//
// Files are written with paths=source_relative by default: custos/v1/events.proto becomes
// OUT/custos/v1/events.pb.go. Extra protoc-gen-go parameters can be given with -go_opt.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	gengo "google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	var (
		includes stringList
		out      = flag.String("out", ".", "output directory for generated .pb.go files")
		goOpt    = flag.String("go_opt", "paths=source_relative", "comma-separated protoc-gen-go parameters")
	)
	flag.Var(&includes, "I", "import path to search for .proto files (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: protogen -I DIR [-I DIR...] -out DIR [-go_opt PARAMS] FILE.proto...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(context.Background(), includes, *out, *goOpt, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, includes []string, out, param string, files []string) error {
	if len(includes) == 0 {
		includes = []string{"."}
	}
	req, err := buildRequest(ctx, includes, param, files)
	if err != nil {
		return err
	}
	resp, err := generate(req)
	if err != nil {
		return err
	}
	for _, f := range resp.GetFile() {
		if f.GetInsertionPoint() != "" {
			return fmt.Errorf("insertion points are not supported (%s)", f.GetName())
		}
		if err := writeFile(filepath.Join(out, filepath.FromSlash(f.GetName())), []byte(f.GetContent())); err != nil {
			return err
		}
	}
	return nil
}

// buildRequest compiles files and returns the request protoc would send: proto_file holds every
// file and its dependencies in topological order, file_to_generate only the named files.
func buildRequest(ctx context.Context, includes []string, param string, files []string) (*pluginpb.CodeGeneratorRequest, error) {
	for i, f := range files {
		files[i] = filepath.ToSlash(filepath.Clean(f))
	}
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			ImportPaths: includes,
		}),
		SourceInfoMode: protocompile.SourceInfoStandard,
		MaxParallelism: 1,
	}
	compiled, err := c.Compile(ctx, files...)
	if err != nil {
		return nil, err
	}

	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: files,
		Parameter:      proto.String(param),
	}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		req.ProtoFile = append(req.ProtoFile, fileProto(fd))
	}
	for _, f := range compiled {
		add(f)
	}
	return req, nil
}

// fileProto returns fd as a descriptor proto, keeping source info (comments) when protocompile
// parsed the file from source.
func fileProto(fd protoreflect.FileDescriptor) *descriptorpb.FileDescriptorProto {
	if r, ok := fd.(linker.Result); ok {
		return proto.Clone(r.FileDescriptorProto()).(*descriptorpb.FileDescriptorProto)
	}
	return protodesc.ToFileDescriptorProto(fd)
}

// generate runs protoc-gen-go's generator in process, exactly as cmd/protoc-gen-go does.
func generate(req *pluginpb.CodeGeneratorRequest) (*pluginpb.CodeGeneratorResponse, error) {
	var flags flag.FlagSet
	plugin, err := protogen.Options{ParamFunc: flags.Set}.New(req)
	if err != nil {
		return nil, err
	}
	for _, f := range plugin.Files {
		if f.Generate {
			gengo.GenerateFile(plugin, f)
		}
	}
	plugin.SupportedFeatures = gengo.SupportedFeatures
	plugin.SupportedEditionsMinimum = gengo.SupportedEditionsMinimum
	plugin.SupportedEditionsMaximum = gengo.SupportedEditionsMaximum
	resp := plugin.Response()
	if resp.Error != nil {
		return nil, errors.New(resp.GetError())
	}
	return resp, nil
}

// writeFile writes data to path unless it already holds exactly data, so a no-op regeneration
// leaves modification times alone.
func writeFile(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
