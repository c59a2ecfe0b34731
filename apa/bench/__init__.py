"""Benchmarks (`apa bench`): training throughput, collation, the sampler's padding and task mix, generation.

    cli        argument parsing, mode dispatch, main(argv)
    train      training throughput, MFU and the projected time of the config's epochs (train mode)
    data       collate throughput per dataloader worker count (data mode)
    sampler    padding and task mix per training order (sampler mode; train mode's padding figures)
    generate   evaluation's generation at several token budgets (generate mode)
    cases      a matrix of train and generate cases in one process, and its summary tables (cases mode)
    flops      the FLOP model that MFU counts, and the device's peak
    synthetic  a synthetic corpus of the full training set's size and token lengths
    common     what the modes share: the composed config, the full corpus's sizes, peak memory, number formatting

The library never imports this package; it imports the library.
"""
