#version 450
// Fills an rgba8 storage image with a deterministic test pattern chosen by
// `seed`. The exact formula is mirrored by `winsys_shaders::pattern_pixel`;
// keep the two in step.

layout(local_size_x = 8, local_size_y = 8, local_size_z = 1) in;

layout(set = 0, binding = 0, rgba8) uniform writeonly image2D target;

layout(push_constant) uniform Push {
    uint seed;
} push;

void main() {
    uvec2 gid = gl_GlobalInvocationID.xy;
    ivec2 size = imageSize(target);
    if (gid.x >= uint(size.x) || gid.y >= uint(size.y)) {
        return;
    }
    uint x = gid.x;
    uint y = gid.y;
    uint s = push.seed;
    uint r = (x * 7u + s) & 255u;
    uint g = (y * 13u + s * 3u) & 255u;
    uint b = ((x ^ y) + s * 5u) & 255u;
    uint a = (x + 2u * y + s * 11u) & 255u;
    imageStore(target, ivec2(gid), vec4(float(r), float(g), float(b), float(a)) / 255.0);
}
