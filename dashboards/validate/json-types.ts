// Type helpers for checking dashboard JSON against @grafana/schema.
//
// JSON has no TypeScript enums: the schema's string enums (e.g. FieldColorModeId,
// ThresholdsMode, BigValueColorMode) are mapped to the union of their string values,
// so "thresholds" is accepted where FieldColorModeId.Thresholds is expected and
// "threshold" is rejected.  Numeric enums keep their member values.  Everything
// else - required properties, property types, unknown properties in object
// literals - is checked exactly as the schema declares it.

/** The JSON form of a schema type. */
export type JsonOf<T> =
  T extends string ? `${T}` :
  T extends number | boolean | null | undefined ? T :
  T extends ReadonlyArray<infer U> ? JsonOf<U>[] :
  T extends object ? { [K in keyof T]: JsonOf<T[K]> } :
  T;

/** Like JsonOf, with every property optional at every depth (Grafana saves
 *  field-config `custom` blocks sparsely), still rejecting unknown properties and
 *  wrong value types. */
export type PartialJsonOf<T> =
  T extends string ? `${T}` :
  T extends number | boolean | null | undefined ? T :
  T extends ReadonlyArray<infer U> ? PartialJsonOf<U>[] :
  T extends object ? { [K in keyof T]?: PartialJsonOf<T[K]> } :
  T;
