# Test accuracy against epoch (full range and zoomed) and against MB sent per rank, for the CSVs
# that run.sh writes:  gnuplot -e "out='compare.png'; dir='fmnist-out'" compare.gp
set terminal pngcairo size 1500,450
set output out
set datafile separator ','
set datafile columnheaders
set key bottom right
set grid
modes = "adam onebit onebit-noef"
set multiplot layout 1,3 title 'Fashion-MNIST, MLP 784-256-10, data-parallel over 4 ranks'
set xlabel 'epoch'
set ylabel 'test accuracy (%)'
plot for [m in modes] dir.'/'.m.'.csv' using 2:6 with linespoints title m
set title 'zoomed'
set yrange [84:90]
plot for [m in modes] dir.'/'.m.'.csv' using 2:6 with linespoints title m
set title 'zoomed, against traffic'
set xlabel 'MB sent per rank (log scale)'
set logscale x
plot for [m in modes] dir.'/'.m.'.csv' using ($7/1e6):6 with linespoints title m
unset multiplot
