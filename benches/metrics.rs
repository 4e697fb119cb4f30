//! Criterion benchmarks of the engine's hot paths on synthetic CT-sized data:
//! the one-thread overlap pass, the distance transform, and a whole evaluation.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use segwatch_engine::metrics::edt::{Point, nearest_site_distances};
use segwatch_engine::metrics::overlap::overlap_serial;
use segwatch_engine::metrics::pairing::{Request, evaluate};
use segwatch_engine::volume::{Grid, LabelVolume, Labels, Segmentation};

/// Ten ellipsoids ("organs") in a 512×512×300 volume; `shift` moves them all.
fn organs(shift: usize) -> LabelVolume {
    let shape = [512usize, 512, 300];
    let grid = Grid::axis_aligned(shape, [0.8, 0.8, 1.5], 3);
    let centres: [([f64; 3], [f64; 3]); 10] = [
        ([180.0, 250.0, 150.0], [110.0, 90.0, 60.0]),
        ([350.0, 260.0, 160.0], [40.0, 50.0, 40.0]),
        ([140.0, 330.0, 120.0], [30.0, 35.0, 45.0]),
        ([370.0, 330.0, 120.0], [30.0, 35.0, 45.0]),
        ([260.0, 300.0, 150.0], [12.0, 12.0, 120.0]),
        ([270.0, 220.0, 140.0], [60.0, 15.0, 12.0]),
        ([210.0, 200.0, 170.0], [15.0, 12.0, 15.0]),
        ([256.0, 200.0, 40.0], [45.0, 40.0, 25.0]),
        ([170.0, 300.0, 200.0], [6.0, 6.0, 5.0]),
        ([340.0, 300.0, 200.0], [6.0, 6.0, 5.0]),
    ];
    let mut labels = vec![0u8; grid.len()];
    for (label, (c, r)) in centres.iter().enumerate() {
        let lo = |a: usize| (c[a] - r[a]).max(0.0) as usize;
        let hi = |a: usize| ((c[a] + r[a]) as usize).min(shape[a] - 1 - shift);
        for z in lo(2)..=hi(2) {
            for y in lo(1)..=hi(1) {
                for x in lo(0)..=hi(0) {
                    let d: f64 = [x, y, z]
                        .iter()
                        .enumerate()
                        .map(|(a, &v)| ((v as f64 - c[a]) / r[a]).powi(2))
                        .sum();
                    if d <= 1.0 {
                        labels[(x + shift) + shape[0] * ((y + shift) + shape[1] * z)] =
                            label as u8 + 1;
                    }
                }
            }
        }
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
