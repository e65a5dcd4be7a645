package main

import (
	"fmt"
	"os"
	"time"

	ort "github.com/yalue/onnxruntime_go"
	"github.com/lemon-curation/lemon/embed/onnx"
)

func main() {
	if err := onnx.Init(); err != nil { panic(err) }
	so, _ := ort.NewSessionOptions()
	so.SetIntraOpNumThreads(2)
	so.EnableProfiling("/tmp/ortprof")
	s, err := ort.NewDynamicAdvancedSession(os.Args[1], []string{"pixel_values"}, []string{"image_embeds"}, so)
	if err != nil { panic(err) }
	B := 32
	x, _ := ort.NewTensor(ort.NewShape(int64(B), 3, 224, 224), make([]float32, B*3*224*224))
	y, _ := ort.NewTensor(ort.NewShape(int64(B), 512), make([]float32, B*512))
	for i := 0; i < 3; i++ {
		t := time.Now()
		if err := s.Run([]ort.Value{x}, []ort.Value{y}); err != nil { panic(err) }
		fmt.Println(time.Since(t))
	}
	s.Destroy()
}
