//! The cube itself: one render pass, one pipeline, one vertex buffer, the
//! same for both WSI paths (only the layouts around the pass differ).
//!
//! No depth buffer: the six faces are drawn back to front (sorted by their
//! centre's depth each frame), so the culling winding never matters.

use std::f32::consts::PI;

use ash::vk;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The clear colour (opaque dark blue-grey), as bytes of an XRGB8888 pixel
/// in memory order (B, G, R, X).
pub const CLEAR_BGRX: [u8; 4] = [0x40, 0x20, 0x10, 0xff];

/// Face colours (R, G, B): +X red, -X green, +Y blue, -Y yellow, +Z
/// magenta, -Z cyan.
pub const FACE_COLOURS: [[f32; 3]; 6] = [
    [1.0, 0.0, 0.0],
    [0.0, 1.0, 0.0],
    [0.0, 0.0, 1.0],
    [1.0, 1.0, 0.0],
    [1.0, 0.0, 1.0],
    [0.0, 1.0, 1.0],
];

/// A column-major 4x4 matrix.
type Mat4 = [[f32; 4]; 4];

fn mul(a: &Mat4, b: &Mat4) -> Mat4 {
    let mut m = [[0.0; 4]; 4];
    for (c, col) in m.iter_mut().enumerate() {
        for (r, v) in col.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[k][r] * b[c][k]).sum();
        }
    }
    m
}

fn rotation(axis: usize, angle: f32) -> Mat4 {
    let (s, c) = angle.sin_cos();
    let mut m = [[0.0; 4]; 4];
    for (i, col) in m.iter_mut().enumerate() {
        col[i] = 1.0;
    }
    let (a, b) = ((axis + 1) % 3, (axis + 2) % 3);
    m[a][a] = c;
    m[a][b] = s;
    m[b][a] = -s;
    m[b][b] = c;
    m
}

/// Model-view (the cube turning, 3 units in front of the eye) and the
/// projection (60° vertical field of view, Vulkan clip space: y down,
/// depth 0..1) at time `t` seconds.
fn matrices(t: f32, aspect: f32) -> (Mat4, Mat4) {
    let mut view = mul(&rotation(1, t * 0.9), &rotation(0, t * 0.6 + 0.5));
    view[3][2] = -3.0;
    let (near, far) = (0.1f32, 10.0f32);
    let f = 1.0 / (PI / 6.0).tan();
    let mut proj = [[0.0; 4]; 4];
    proj[0][0] = f / aspect;
    proj[1][1] = -f;
    proj[2][2] = far / (near - far);
    proj[2][3] = -1.0;
    proj[3][2] = near * far / (near - far);
    (view, proj)
}

/// Face `face`'s axis and the coordinate of its plane on it.
fn face_plane(face: usize) -> (usize, f32) {
    (face / 2, if face.is_multiple_of(2) { 0.6 } else { -0.6 })
}

/// The 36 vertices (position, colour) of the cube of side 1.2 around the
/// origin, face by face in [`FACE_COLOURS`] order.
fn vertices() -> Vec<[f32; 6]> {
    let mut out = Vec::with_capacity(36);
    for (face, colour) in FACE_COLOURS.iter().enumerate() {
        let (axis, sign) = face_plane(face);
        let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
        let corner = |a: f32, b: f32| {
            let mut p = [0.0f32; 3];
            p[axis] = sign;
            p[u] = a;
            p[v] = b;
            [p[0], p[1], p[2], colour[0], colour[1], colour[2]]
        };
        for (a, b) in [
            (-0.6, -0.6),
            (0.6, -0.6),
            (0.6, 0.6),
            (-0.6, -0.6),
            (0.6, 0.6),
            (-0.6, 0.6),
        ] {
            out.push(corner(a, b));
        }
    }
    out
}

/// The faces back to front for `view`: the depth of each face's centre,
/// farthest (most negative z) first.
fn face_order(view: &Mat4) -> [usize; 6] {
    let mut order = [0, 1, 2, 3, 4, 5];
    let depth = |face: usize| {
        let (axis, sign) = face_plane(face);
        view[axis][2] * sign + view[3][2]
    };
    order.sort_by(|&a, &b| depth(a).total_cmp(&depth(b)));
    order
}

/// Render pass, pipeline and vertex buffer for one colour format, and a
/// framebuffer per image view.
pub struct Renderer {
    device: ash::Device,
    render_pass: vk::RenderPass,
    layout: vk::PipelineLayout,
    pipeline: vk::Pipeline,
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    framebuffers: Vec<vk::Framebuffer>,
    extent: vk::Extent2D,
}

impl Renderer {
    /// For `views` of `extent` in `format`; the pass takes the image in
    /// `initial` layout and leaves it in `last`.
    ///
    /// # Safety
    ///
    /// The handles must be live objects of `instance`/`device`, and the
    /// views must outlive the renderer.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn new(
        instance: &ash::Instance,
        physical: vk::PhysicalDevice,
        device: &ash::Device,
        format: vk::Format,
        extent: vk::Extent2D,
        views: &[vk::ImageView],
        initial: vk::ImageLayout,
        last: vk::ImageLayout,
    ) -> Result<Self> {
        let attachment = vk::AttachmentDescription::default()
            .format(format)
            .samples(vk::SampleCountFlags::TYPE_1)
            .load_op(vk::AttachmentLoadOp::CLEAR)
            .store_op(vk::AttachmentStoreOp::STORE)
            .stencil_load_op(vk::AttachmentLoadOp::DONT_CARE)
            .stencil_store_op(vk::AttachmentStoreOp::DONT_CARE)
            .initial_layout(initial)
            .final_layout(last);
        let colour_ref = [vk::AttachmentReference {
            attachment: 0,
            layout: vk::ImageLayout::COLOR_ATTACHMENT_OPTIMAL,
        }];
        let subpass = vk::SubpassDescription::default()
            .pipeline_bind_point(vk::PipelineBindPoint::GRAPHICS)
            .color_attachments(&colour_ref);
        let dependency = vk::SubpassDependency::default()
            .src_subpass(vk::SUBPASS_EXTERNAL)
            .dst_subpass(0)
            .src_stage_mask(vk::PipelineStageFlags::COLOR_ATTACHMENT_OUTPUT)
            .dst_stage_mask(vk::PipelineStageFlags::COLOR_ATTACHMENT_OUTPUT)
            .dst_access_mask(vk::AccessFlags::COLOR_ATTACHMENT_WRITE);
        let attachments = [attachment];
        let subpasses = [subpass];
        let dependencies = [dependency];
        // SAFETY (all calls below): the caller guarantees live handles of
        // this device; every create-info outlives its call.
        let render_pass = unsafe {
            device.create_render_pass(
                &vk::RenderPassCreateInfo::default()
                    .attachments(&attachments)
                    .subpasses(&subpasses)
                    .dependencies(&dependencies),
                None,
            )
        }?;
        let push = [vk::PushConstantRange {
            stage_flags: vk::ShaderStageFlags::VERTEX,
            offset: 0,
            size: 64,
        }];
        let layout = unsafe {
            device.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default().push_constant_ranges(&push),
                None,
            )
        }?;
        let module = |code: &[u32]| unsafe {
            device.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(code), None)
        };
        let vert = module(winsys_shaders::CUBE_VERT)?;
        let frag = module(winsys_shaders::CUBE_FRAG)?;
        let stages = [
            vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::VERTEX)
                .module(vert)
                .name(winsys_shaders::ENTRY_POINT),
            vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::FRAGMENT)
                .module(frag)
                .name(winsys_shaders::ENTRY_POINT),
        ];
        let bindings = [vk::VertexInputBindingDescription {
            binding: 0,
            stride: 24,
            input_rate: vk::VertexInputRate::VERTEX,
        }];
        let attributes = [
            vk::VertexInputAttributeDescription {
                location: 0,
                binding: 0,
                format: vk::Format::R32G32B32_SFLOAT,
                offset: 0,
            },
            vk::VertexInputAttributeDescription {
                location: 1,
                binding: 0,
                format: vk::Format::R32G32B32_SFLOAT,
                offset: 12,
            },
        ];
        let vertex_input = vk::PipelineVertexInputStateCreateInfo::default()
            .vertex_binding_descriptions(&bindings)
            .vertex_attribute_descriptions(&attributes);
        let assembly = vk::PipelineInputAssemblyStateCreateInfo::default()
            .topology(vk::PrimitiveTopology::TRIANGLE_LIST);
        let viewports = [vk::Viewport {
            x: 0.0,
            y: 0.0,
            width: extent.width as f32,
            height: extent.height as f32,
            min_depth: 0.0,
            max_depth: 1.0,
        }];
        let scissors = [vk::Rect2D {
            offset: vk::Offset2D::default(),
            extent,
        }];
        let viewport = vk::PipelineViewportStateCreateInfo::default()
            .viewports(&viewports)
            .scissors(&scissors);
        let raster = vk::PipelineRasterizationStateCreateInfo::default()
            .polygon_mode(vk::PolygonMode::FILL)
            .cull_mode(vk::CullModeFlags::NONE)
            .front_face(vk::FrontFace::COUNTER_CLOCKWISE)
            .line_width(1.0);
        let multisample = vk::PipelineMultisampleStateCreateInfo::default()
            .rasterization_samples(vk::SampleCountFlags::TYPE_1);
        let blend_attachments = [vk::PipelineColorBlendAttachmentState::default()
            .color_write_mask(vk::ColorComponentFlags::RGBA)];
        let blend =
            vk::PipelineColorBlendStateCreateInfo::default().attachments(&blend_attachments);
        let info = vk::GraphicsPipelineCreateInfo::default()
            .stages(&stages)
            .vertex_input_state(&vertex_input)
            .input_assembly_state(&assembly)
            .viewport_state(&viewport)
            .rasterization_state(&raster)
            .multisample_state(&multisample)
            .color_blend_state(&blend)
            .layout(layout)
            .render_pass(render_pass)
            .subpass(0);
        let pipeline =
            unsafe { device.create_graphics_pipelines(vk::PipelineCache::null(), &[info], None) }
                .map_err(|(_, e)| e)?[0];
        unsafe {
            device.destroy_shader_module(vert, None);
            device.destroy_shader_module(frag, None);
        }

        let data = vertices();
        let bytes = std::mem::size_of_val(data.as_slice());
        let buffer = unsafe {
            device.create_buffer(
                &vk::BufferCreateInfo::default()
                    .size(bytes as u64)
                    .usage(vk::BufferUsageFlags::VERTEX_BUFFER)
                    .sharing_mode(vk::SharingMode::EXCLUSIVE),
                None,
            )
        }?;
        let req = unsafe { device.get_buffer_memory_requirements(buffer) };
        let props = unsafe { instance.get_physical_device_memory_properties(physical) };
        let wanted = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let type_index = (0..props.memory_type_count)
            .find(|&i| {
                req.memory_type_bits & (1 << i) != 0
                    && props.memory_types[i as usize]
                        .property_flags
                        .contains(wanted)
            })
            .ok_or("no host-visible coherent memory for the vertex buffer")?;
        let memory = unsafe {
            device.allocate_memory(
                &vk::MemoryAllocateInfo::default()
                    .allocation_size(req.size)
                    .memory_type_index(type_index),
                None,
            )
        }?;
        unsafe {
            device.bind_buffer_memory(buffer, memory, 0)?;
            let ptr = device.map_memory(memory, 0, bytes as u64, vk::MemoryMapFlags::empty())?;
            // SAFETY: the mapping is `bytes` long and host-coherent.
            std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), ptr.cast::<u8>(), bytes);
            device.unmap_memory(memory);
        }
        let mut framebuffers = Vec::with_capacity(views.len());
        for view in views {
            let attachments = [*view];
            framebuffers.push(unsafe {
                device.create_framebuffer(
                    &vk::FramebufferCreateInfo::default()
                        .render_pass(render_pass)
                        .attachments(&attachments)
                        .width(extent.width)
                        .height(extent.height)
                        .layers(1),
                    None,
                )
            }?);
        }
        Ok(Renderer {
            device: device.clone(),
            render_pass,
            layout,
            pipeline,
            buffer,
            memory,
            framebuffers,
            extent,
        })
    }

    /// Record the frame at time `t` into framebuffer `index`.
    ///
    /// # Safety
    ///
    /// `cmd` must be a recording command buffer of the renderer's device,
    /// and the image behind framebuffer `index` in the pass's initial
    /// layout when it runs.
    pub unsafe fn record(&self, cmd: vk::CommandBuffer, index: usize, t: f32) {
        let aspect = self.extent.width as f32 / self.extent.height as f32;
        let (view, proj) = matrices(t, aspect);
        let mvp = mul(&proj, &view);
        let clear = [vk::ClearValue {
            color: vk::ClearColorValue {
                float32: [
                    f32::from(CLEAR_BGRX[2]) / 255.0,
                    f32::from(CLEAR_BGRX[1]) / 255.0,
                    f32::from(CLEAR_BGRX[0]) / 255.0,
                    1.0,
                ],
            },
        }];
        let begin = vk::RenderPassBeginInfo::default()
            .render_pass(self.render_pass)
            .framebuffer(self.framebuffers[index])
            .render_area(vk::Rect2D {
                offset: vk::Offset2D::default(),
                extent: self.extent,
            })
            .clear_values(&clear);
        let d = &self.device;
        // SAFETY: the caller guarantees a recording command buffer of this
        // device; every object named is the renderer's own.
        unsafe {
            d.cmd_begin_render_pass(cmd, &begin, vk::SubpassContents::INLINE);
            d.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::GRAPHICS, self.pipeline);
            d.cmd_bind_vertex_buffers(cmd, 0, &[self.buffer], &[0]);
            let words: Vec<u8> = mvp.iter().flatten().flat_map(|f| f.to_le_bytes()).collect();
            d.cmd_push_constants(cmd, self.layout, vk::ShaderStageFlags::VERTEX, 0, &words);
            for face in face_order(&view) {
                d.cmd_draw(cmd, 6, 1, face as u32 * 6, 0);
            }
            d.cmd_end_render_pass(cmd);
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        let d = &self.device;
        // SAFETY: the owner waited for the device's work before dropping
        // the renderer (both paths do); the objects are the renderer's own.
        unsafe {
            for fb in &self.framebuffers {
                d.destroy_framebuffer(*fb, None);
            }
            d.destroy_pipeline(self.pipeline, None);
            d.destroy_pipeline_layout(self.layout, None);
            d.destroy_render_pass(self.render_pass, None);
            d.destroy_buffer(self.buffer, None);
            d.free_memory(self.memory, None);
        }
    }
}
