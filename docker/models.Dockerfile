# A models image for deploy/k8s: the init container copies /models/*.onnx into the pod.
#   docker build -f docker/models.Dockerfile -t fcnseg-models:2026-11-25 path/to/folder/with/onnx
FROM busybox:1.37
COPY *.onnx /models/
USER 10001
