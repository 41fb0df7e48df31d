#version 450
// Spinning-cube vertex shader: transforms the vertex by a push-constant
// model-view-projection matrix (Vulkan clip space) and passes the vertex
// colour on to the fragment shader.

layout(location = 0) in vec3 position;
layout(location = 1) in vec3 color;

layout(push_constant) uniform Push {
    mat4 mvp;
} push;

layout(location = 0) out vec3 frag_color;

void main() {
    gl_Position = push.mvp * vec4(position, 1.0);
    frag_color = color;
}
