//! Criterion benchmarks of the engine's hot paths on synthetic CT-sized data:
//! the one-thread overlap pass, the distance transform, and a whole evaluation.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use segwatch_engine::metrics::edt::{Point, nearest_site_distances};
use segwatch_engine::metrics::overlap::overlap_serial;
use segwatch_engine::metrics::pairing::{Request, evaluate};
use segwatch_engine::volume::{Grid, LabelVolume, Labels, Segmentation};

#[path = "shared/ct_phantom.rs"]
mod ct_phantom;

/// The phantom's organs, all moved by `shift` voxels along x and y.
fn organs(shift: usize) -> LabelVolume {
    let grid = Grid::axis_aligned(ct_phantom::SHAPE, ct_phantom::SPACING, 3);
    let mut labels = vec![0u8; grid.len()];
    for (i, (c, r)) in ct_phantom::ORGANS.iter().enumerate() {
        let s = shift as f64;
        ct_phantom::ellipsoid(&mut labels, [c[0] + s, c[1] + s, c[2]], *r, i as u8 + 1);
    }
    LabelVolume::new(grid, Labels::U8(labels)).unwrap()
}

fn benches(c: &mut Criterion) {
    let reference = organs(0);
    let pred = organs(1);
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(reference.grid.len() as u64));
    group.bench_function("overlap_one_thread_512x512x300", |b| {
        b.iter(|| overlap_serial(&pred.labels, &reference.labels, pred.grid.shape))
    });
    // Surfaces of two spheres of radius 60 voxels, 2 voxels apart.
    let sphere = |centre: f64| -> Vec<Point> {
        let mut points = Vec::new();
        for z in 0..130u32 {
            for y in 0..130u32 {
                for x in 0..130u32 {
                    let r2: f64 = [x as f64 - centre, y as f64 - 65.0, z as f64 - 65.0]
                        .iter()
                        .map(|v| v * v)
                        .sum();
                    if (3481.0..3600.0).contains(&r2) {
                        points.push([x, y, z]);
                    }
                }
            }
        }
        points
    };
    let (a, b) = (sphere(64.0), sphere(66.0));
    group.throughput(Throughput::Elements(a.len() as u64));
    group.bench_function("nearest_site_distances_sphere_r60", |bench| {
        bench.iter(|| nearest_site_distances(&a, &b, [0.8, 0.8, 1.5]))
    });
    group.throughput(Throughput::Elements(reference.grid.len() as u64));
    group.bench_function("evaluate_voxel_512x512x300", |b| {
        let (p, r) = (
            Segmentation::LabelMap(pred.clone()),
            Segmentation::LabelMap(reference.clone()),
        );
        b.iter(|| evaluate(&p, &r, &Request::default()).unwrap())
    });
    group.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
